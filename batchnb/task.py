"""``Task``: a handle on one task of a job, read from the ledger.

``t.wait()`` returns once the task is in a terminal state:

>>> from batchnb.states import TERMINAL_TASK_STATES
>>> sorted(s.value for s in TERMINAL_TASK_STATES)
['blocked', 'cancelled', 'failed', 'succeeded']
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import _config
from .errors import JobTerminated, SpecError, TaskFailed, WaitTimeout
from .states import TERMINAL_TASK_STATES, TaskState

if TYPE_CHECKING:
    from typing import Any

    import batchnb          # the Job is a layer above: named as users name it, bnb.Job


@dataclass(frozen=True)
class TaskInfo:
    """One row of ``job.tasks()``."""

    id: str
    state: str
    exit_code: int | None
    attempts: int
    requeues: int
    node: str | None
    failure: str | None
    category: str | None
    command: str
    created: float | None
    ended: float | None


@dataclass(frozen=True)
class SubtaskInfo:
    """One instance of a multi-instance task, as ``t.subtasks()`` gives it.

    Instance 0 is the primary: its state, exit code and output are the application
    command's (``coordination_exit_code`` is its coordination command's). The other
    instances' are their coordination command's. ``stdout``/``stderr`` are tails.

    >>> s = SubtaskInfo(1, "dedicated-1", "127.0.0.1", "succeeded", 0, 0, "ready\\n", "", 1, None, None, None, None)
    >>> s.primary, s.node, s.exit_code
    (False, 'dedicated-1', 0)
    """

    instance: int
    node: str
    host: str
    state: str
    exit_code: int | None
    coordination_exit_code: int | None
    stdout: str
    stderr: str
    attempt: int
    start: float | None
    end: float | None
    message: str | None
    task_dir: str | None

    @property
    def primary(self) -> bool:
        return self.instance == 0


class TaskList(Sequence):
    """The tasks ``job.map``, ``job.sweep`` and ``job.add_tasks`` added, as a list of :class:`Task`
    handles made when asked for: a million tasks cost their ids (a few numbers when they are
    numbered in order), not a million handles.

    It behaves as a read-only list: ``len``, indexing, slicing (a ``TaskList``), iteration,
    ``in``, ``index``; ``list(tasks)`` makes every handle. Passed to ``job.submit`` or
    ``job.map`` (even inside a list or dict) its tasks become dependencies, as a list's do.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1) as pool:
    ...     job = pool.job("tasklist")
    ...     squares = job.map(pow, range(1000), [2] * 1000)
    ...     print(len(squares), squares[7].task_id, squares[-1].task_id, len(squares[10:20]))
    ...     print(job.submit(sum, squares[:4]).result())
    1000 pow-7 pow-999 10
    14
    """

    __slots__ = ("job", "_ids")

    def __init__(self, job: batchnb.Job, ids: Sequence[str]) -> None:
        self.job = job
        self._ids = ids

    @property
    def task_ids(self) -> Sequence[str]:
        """The ids, in the order the tasks were added (held compactly too)."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return TaskList(self.job, self._ids[i])
        return Task(self.job, self._ids[i])

    def __iter__(self):
        job = self.job
        for task_id in self._ids:
            yield Task(job, task_id)

    def __contains__(self, task) -> bool:
        return isinstance(task, Task) and task.job.id.lower() == self.job.id.lower() \
            and any(i == task.task_id for i in self._ids)

    def index(self, task, start: int = 0, stop: int | None = None) -> int:
        if isinstance(task, Task) and task.job.id.lower() == self.job.id.lower():
            for k in range(start, len(self) if stop is None else stop):
                if self._ids[k] == task.task_id:
                    return k
        raise ValueError(f"{task!r} is not in this TaskList")

    def __add__(self, other) -> list:
        return [*self, *other]

    def __radd__(self, other) -> list:
        return [*other, *self]

    def __repr__(self) -> str:
        # A task's repr reads its state from the ledger: shown for a few, counted for the rest.
        n = len(self)
        if n <= 6:
            return repr(list(self))
        head = ", ".join(repr(self[k]) for k in range(3))
        return f"[{head}, ... {n - 4:,} more ..., {self[n - 1]!r}] ({n:,} tasks of job {self.job.id!r})"


def plain_lists(obj):
    """``obj`` with every TaskList in it (in lists, tuples, dicts) made a list of its handles,
    so the tasks in a call's arguments are found as dependencies."""
    if isinstance(obj, TaskList):
        return list(obj)
    if isinstance(obj, list):
        return [plain_lists(x) for x in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(plain_lists(x) for x in obj)
    if isinstance(obj, dict):
        return {k: plain_lists(x) for k, x in obj.items()}
    return obj


def task_info(row) -> TaskInfo:
    spec = json.loads(row["spec"])
    failure = json.loads(row["failure"]) if row["failure"] else {}
    # A map's task refers to its array and names its function (engine/arrays.py).
    command = spec.get("command") or f"{(spec.get('python') or spec).get('name', '?')}(...)"
    if spec.get("kind") == "command":       # a sweep's task: its template and which of its tasks it is
        command = f"{spec['name']} (sweep task {spec['index']})"
    if isinstance(command, list):
        command = " ".join(command)
    return TaskInfo(row["id"], row["state"], row["exit_code"], row["attempts"], row["requeues"], row["node"],
                    failure.get("message"), failure.get("category"), command, row["created"], row["ended"])


class Task:
    """A task of a job. Properties read the ledger, so they are always current.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1) as pool:
    ...     job = pool.job("tasks", max_task_retries=1)
    ...     t = job.add_task("t1", "echo hi")
    ...     bad = job.add_task("t2", "echo oops >&2; exit 3")
    ...     print(t.wait().value, t.exit_code, t.stdout().strip())
    ...     print(bad.wait().value, bad.exit_code, len(bad.attempts), bad.stderr().strip(), bad.failure["message"])
    ...     print(job.submit(pow, 2, 10).result())
    succeeded 0 hi
    failed 3 2 oops exit code 3
    1024
    """

    def __init__(self, job: batchnb.Job, task_id: str) -> None:
        self.job = job
        self.task_id = task_id

    def __repr__(self):
        return f"<batchnb.Task {self.job.id}/{self.task_id} {self.state.value}>"

    def _row(self) -> dict:
        row = self.job.ledger.task(self.job.id, self.task_id)
        if row is None:
            raise KeyError(f"task {self.task_id!r} is not in job {self.job.id!r}")
        return row

    @property
    def state(self) -> TaskState:
        return TaskState(self._row()["state"])

    @property
    def exit_code(self) -> int | None:
        return self._row()["exit_code"]

    @property
    def attempts(self) -> list[dict]:
        """Every attempt: number, node, state (succeeded/failed/requeued/interrupted...), times, exit code."""
        return self.job.ledger.attempts(self.job.id, self.task_id)

    @property
    def requeue_count(self) -> int:
        return self._row()["requeues"]

    @property
    def failure(self) -> dict | None:
        """Why it failed: category, message and node; None when it did not fail."""
        row = self._row()
        return json.loads(row["failure"]) if row["failure"] and row["state"] != "succeeded" else None

    def info(self) -> TaskInfo:
        return task_info(self._row())

    @property
    def spec(self) -> batchnb.TaskSpec:
        """The task's :class:`bnb.TaskSpec`; a task of a ``job.map`` has its own made now, from its
        job's array spec and its index (no map holds a spec per task)."""
        from .engine.arrays import Arrays, spec_of_row
        engine = getattr(self.job.pool, "_engine", None)
        arrays = Arrays(self.job.ledger, getattr(engine, "storage_options", None) or {})
        return spec_of_row(arrays, self.job.id, self._row()["spec"])

    def wait(self, timeout: float | None = None) -> TaskState:
        """Block until the task ends; return its final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self.job._run.changed if self.job._run is not None else None
        while True:
            state = self.state
            if state in TERMINAL_TASK_STATES:
                return state
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"task {self.task_id!r} of job {self.job.id!r} is still {state.value} "
                                  f"after {timeout}s")
            wait = 0.5 if left is None else min(0.5, left)
            if cond is not None:
                with cond:
                    cond.wait(wait)
            else:
                time.sleep(wait)

    def result(self, timeout: float | None = None) -> Any:
        """The Python task's return value (waits for it); TaskFailed if it did not succeed."""
        import cloudpickle
        state = self.wait(timeout)
        remote = self._remote()
        # A detached pool's agent reads the row and raises as _ended_result does, in the same call.
        data = remote(self.job.id, self.task_id, "result") if remote is not None else self._ended_result(state)
        return None if data is None else cloudpickle.loads(data)

    def _ended_result(self, state: TaskState | None = None) -> bytes | None:
        """The stored result of the ended task (pickled); TaskFailed or JobTerminated if it did not succeed."""
        row = self._row()
        state = TaskState(row["state"]) if state is None else state
        if state != TaskState.SUCCEEDED:
            failure = json.loads(row["failure"]) if row["failure"] else {}
            if state == TaskState.CANCELLED:
                raise JobTerminated(f"task {self.task_id!r} was cancelled: {failure.get('message') or 'job ended'}")
            raise TaskFailed(f"task {self.task_id!r} of job {self.job.id!r} {state.value}: "
                             f"{failure.get('message') or 'no message'}")
        return self._result_bytes(row)

    def _result_bytes(self, row: dict | None = None) -> bytes | None:
        row = row or self._row()
        if row["result_url"]:
            import fsspec
            url = row["result_url"]
            engine = getattr(self.job.pool, "_engine", None)
            options = getattr(engine, "storage_options", None) or _config.get("storage-options") or {}
            opts = options.get(url.split("://")[0], {})
            with fsspec.open(url, "rb", **opts) as fh:
                return fh.read()
        return row["result"]

    def _remote(self):
        # A detached pool's client: the task's files are where its agent runs, maybe on another machine.
        return getattr(getattr(self.job.pool, "_engine", None), "task_output", None)

    def _log(self, name: str) -> str:
        remote = self._remote()
        if remote is not None:
            return remote(self.job.id, self.task_id, "log", name=name)
        attempts = self.attempts
        if not attempts:
            return ""
        last = attempts[-1]
        if last["task_dir"]:
            path = Path(last["task_dir"]) / name
            try:
                return path.read_text(errors="replace")
            except OSError:
                pass
        from .extensions.logs import kept_log      # the node's folder is gone: a copy under logs_url?
        pool = getattr(self.job, "pool", None)
        kept = kept_log(self.job.ledger, self.job.id, self.task_id, last["n"], name,
                        getattr(getattr(pool, "_engine", None), "storage_options", None))
        return kept if kept is not None else (last[f"{name[:6]}_tail"] or "")

    def stdout(self) -> str:
        """The last attempt's stdout.txt (its tail from the ledger if the node is out of reach)."""
        return self._log("stdout.txt")

    def stderr(self) -> str:
        return self._log("stderr.txt")

    def reactivate(self) -> None:
        """Run this failed task again (Azure's reactivate): its retry count resets, the tasks it
        blocked wait for it again, its job is active again if it had completed. Only a failed
        task can be reactivated (a SpecError says why otherwise)."""
        self.job._reactivate([self.task_id])

    def tail(self, n: int = 50, stream: str = "stdout") -> str:
        """The last ``n`` lines of the last attempt's stdout (or ``stream="stderr"``): live from its
        node while it runs, else its file or the tail the ledger kept after the node was gone."""
        if stream not in ("stdout", "stderr"):
            raise SpecError("stream", stream, "is 'stdout' or 'stderr'")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SpecError("n", n, "is a number of lines: an int, 0 or more")
        remote = self._remote()
        if remote is not None:
            return remote(self.job.id, self.task_id, "tail", n=n, stream=stream)
        attempts = self.attempts
        if attempts and attempts[-1]["state"] == "running" and self.job._dispatched_here():
            from .engine.reactivate import live_tail
            text = live_tail(self.job.pool._dispatcher, self.job.id, attempts[-1], f"{stream}.txt", n)
            if text is not None:
                return text
        lines = self._log(f"{stream}.txt").splitlines(keepends=True)
        return "".join(lines[-n:]) if n > 0 else ""

    def subtasks(self) -> list[SubtaskInfo]:
        """A multi-instance task's instances in its last attempt: node, state, exit code, output tails.

        Empty for a task that is not multi-instance or has not started.
        """
        out = []
        rows = self.job.ledger.subtasks(self.job.id, self.task_id)
        ended = {a["n"]: a["state"] for a in self.attempts} if rows else {}
        for d in rows:
            state = d["state"]
            if state == "running" and ended.get(d["attempt"]) not in (None, "running"):
                # Its driver stopped with it running (the attempt is "interrupted"): it runs no more.
                state = ended[d["attempt"]]
            out.append(SubtaskInfo(d["instance"], d["node"], d.get("host", ""), state, d.get("exit_code"),
                                   d.get("coordination_exit_code"), d.get("stdout") or "", d.get("stderr") or "",
                                   d["attempt"], d.get("start"), d.get("end"), d.get("message"),
                                   d.get("task_dir")))
        return out
