"""One attempt's vocabulary on a node: its request and record, failure categories,
the node's folders, Azure Batch's task variables, and the registry of running
task processes that terminate, preemption and pool close kill.

Apart from :mod:`batchnb.node.runner` so that the Python-task code
(:mod:`batchnb.node.pytask`) and the start task share it without a cycle.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..states import NodeGroup, group_of
from . import proctree as _proctree
from ..states import NOT_TASK_FAULT, FailureCategory  # noqa: F401 - NOT_TASK_FAULT is part of this vocabulary

TAIL_BYTES = 4096

# Failure categories, by the names the runner has always used (defined in batchnb.states).
EXIT_CODE = FailureCategory.EXIT_CODE
TIMEOUT = FailureCategory.TIMEOUT
PREPROCESSING = FailureCategory.PREPROCESSING
UPLOAD = FailureCategory.UPLOAD
PYTHON = FailureCategory.PYTHON
CRASH = FailureCategory.CRASH
NODE_LOST = FailureCategory.NODE_LOST
TERMINATED = FailureCategory.TERMINATED


@dataclass
class AttemptRequest:
    """Everything a worker needs for one attempt (secrets resolved, never recorded)."""

    job_id: str
    task_id: str
    attempt: int
    pool_id: str
    command: Any = None
    python: bytes | None = None
    dep_results: dict = field(default_factory=dict)   # task id -> pickled bytes or URL
    env: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict, repr=False)   # credentials: never in a repr
    inputs: tuple = ()
    outputs: tuple = ()
    max_wall_clock: float | None = None
    node_root: str = ""
    storage_options: dict = field(default_factory=dict, repr=False)   # credentials: never in a repr
    result_url: str | None = None
    result_inline_max: int = 1 << 20
    host_list: tuple = ()
    app_packages: tuple = ()
    #: the group its backend declares for the node ("dedicated" | "spot"); None in a request
    #: made without one (a start task's), where the node's name is the fallback
    node_group: str | None = None


@dataclass
class AttemptRecord:
    job_id: str
    task_id: str
    attempt: int
    node_id: str | None
    start: float
    end: float = 0.0
    exit_code: int | None = None
    category: str | None = None
    message: str | None = None
    task_dir: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    stage_in_seconds: float = 0.0
    stage_out_seconds: float = 0.0
    result: bytes | None = None
    result_url: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.category is None and self.exit_code == 0


# -- registry of running processes, so that terminate() can kill them -------
_running: dict[tuple[str, str, int], Any] = {}
_running_lock = threading.Lock()
_terminated: set[tuple[str, str, int]] = set()


def kill_attempts(keys) -> int:
    """Kill the process trees of these (job, task, attempt) keys on this worker."""
    killed = 0
    for key in keys:
        key = tuple(key)
        with _running_lock:
            if len(_terminated) > 10_000:   # kills that met no process: forget old ones
                _terminated.clear()
            _terminated.add(key)
            proc = _running.get(key)
        if proc is not None:
            _proctree.kill_tree(proc)
            killed += 1
    return killed


def kill_all() -> int:
    """Kill every task process of this worker (its node is preempted or its pool closes)."""
    with _running_lock:
        keys = list(_running)
    return kill_attempts(keys)


async def kill_attempts_soon(keys) -> int:
    """``kill_attempts`` for ``client.run(..., wait=False)``, which takes only coroutines;
    the killing (which waits for the processes) runs off the worker's event loop."""
    import asyncio
    return await asyncio.get_running_loop().run_in_executor(None, kill_attempts, keys)


def _node_id() -> str:
    try:
        from distributed import get_worker
        return str(get_worker().name)
    except (ImportError, ValueError):
        return os.environ.get("AZ_BATCH_NODE_ID", "local")


def node_dirs(node_root: str, node_id: str) -> dict[str, Path]:
    root = Path(node_root or os.path.expanduser("~/.batchnb/nodes")) / node_id
    return {"root": root, "shared": root / "shared", "startup": root / "startup",
            "applications": root / "applications", "workitems": root / "workitems"}


def task_environment(req: AttemptRequest, node_id: str, dirs: dict, task_dir: Path, wd: Path) -> dict:
    """Azure Batch's variables with their Azure meanings, then the task's own."""
    hosts = list(req.host_list) or [node_id]
    group = req.node_group or group_of(node_id)
    env = {
        "AZ_BATCH_POOL_ID": req.pool_id,
        "AZ_BATCH_NODE_ID": node_id,
        "AZ_BATCH_NODE_ROOT_DIR": str(dirs["root"]),
        "AZ_BATCH_NODE_SHARED_DIR": str(dirs["shared"]),
        "AZ_BATCH_NODE_STARTUP_DIR": str(dirs["startup"]),
        "AZ_BATCH_NODE_IS_DEDICATED": "false" if group == NodeGroup.SPOT.value else "true",
        "AZ_BATCH_JOB_ID": req.job_id,
        "AZ_BATCH_TASK_ID": req.task_id,
        "AZ_BATCH_TASK_DIR": str(task_dir),
        "AZ_BATCH_TASK_WORKING_DIR": str(wd),
        "AZ_BATCH_TASK_ATTEMPT": str(req.attempt),
        "AZ_BATCH_HOST_LIST": ",".join(hosts),
        "AZ_BATCH_MASTER_NODE": hosts[0],
        "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if hosts[0] == node_id else "false",
    }
    for name, version, folder in req.app_packages:
        # The pool unpacks each package once per node, before the start task.
        folder = folder or str(dirs["applications"] / f"{name}_{version}")
        env[f"AZ_BATCH_APP_PACKAGE_{name}_{version}".replace(".", "_").replace("-", "_")] = folder
    env.update(req.env)
    env.update(req.secrets)
    return env


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
