"""``bnb.current_task()``: where a running Python task is and who it is.

Command tasks read Azure Batch's ``AZ_BATCH_*`` variables. A Python task that
runs inside the worker process cannot get variables of its own (the process
is shared by the node's slots), so the runner keeps the same values per
thread, and this function gives them to the task's code.

>>> import batchnb as bnb
>>> def work():
...     ctx = bnb.current_task()
...     return ctx.job_id, ctx.task_id, ctx.attempt, ctx.node_id, ctx["AZ_BATCH_TASK_ID"], ctx.working_dir.name
>>> with bnb.Pool("doc", dedicated=1) as pool:
...     pool.job("ctx").submit(work, task_id="w1").result()
('ctx', 'w1', 1, 'dedicated-0', 'w1', 'wd')
>>> bnb.current_task() is None          # outside any task
True
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

_local = threading.local()


@dataclass(frozen=True)
class TaskContext:
    """Who and where a running Python task is, as ``bnb.current_task()`` gives it.

    >>> ctx = TaskContext("render", "t1", 1, "dedicated-0", Path("wd"), Path("."), {"AZ_BATCH_TASK_ID": "t1"})
    >>> ctx["AZ_BATCH_TASK_ID"], ctx.attempt
    ('t1', 1)
    """

    job_id: str
    task_id: str
    attempt: int
    node_id: str
    working_dir: Path
    task_dir: Path
    env: dict

    def __getitem__(self, name: str) -> str:
        """An ``AZ_BATCH_*`` variable by name, as a command task would see it."""
        return self.env[name]


def current_task() -> TaskContext | None:
    """The Python task running on this thread (or in this process), else None."""
    ctx = getattr(_local, "ctx", None)
    if ctx is not None:
        return ctx
    env = os.environ
    if "AZ_BATCH_TASK_ID" not in env:
        return None
    return TaskContext(env["AZ_BATCH_JOB_ID"], env["AZ_BATCH_TASK_ID"], int(env.get("AZ_BATCH_TASK_ATTEMPT", 1)),
                       env["AZ_BATCH_NODE_ID"], Path(env["AZ_BATCH_TASK_WORKING_DIR"]),
                       Path(env["AZ_BATCH_TASK_DIR"]), {k: v for k, v in env.items() if k.startswith("AZ_BATCH_")})


def set_current(ctx: TaskContext | None) -> None:
    _local.ctx = ctx
