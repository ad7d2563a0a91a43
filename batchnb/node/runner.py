"""What runs on a worker: one task attempt, start to end.

An attempt never raises into Dask. It makes its own folder on the node,
stages its inputs, runs the command (or the Python call), keeps stdout.txt
and stderr.txt, stages its outputs and returns an :class:`AttemptRecord`:
exit code, times, node, and a failure category when it failed. Retries and
dependency actions are the dispatcher's business, not this module's.

Node layout (as Azure Batch's)::

    <node root>/shared/                  AZ_BATCH_NODE_SHARED_DIR
    <node root>/startup/                 AZ_BATCH_NODE_STARTUP_DIR
    <node root>/applications/            app packages
    <node root>/workitems/<job>/<task>/<attempt>/   AZ_BATCH_TASK_DIR (stdout.txt, stderr.txt)
                                          .../wd/   AZ_BATCH_TASK_WORKING_DIR
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import proctree as _proctree
from ..errors import StagingError

TAIL_BYTES = 4096

# Failure categories (the dispatcher maps them to retries and exit conditions).
EXIT_CODE = "exit_code"            # the command exited non-zero
TIMEOUT = "timeout"                # killed at max_wall_clock
PREPROCESSING = "preprocessing"    # an input could not be staged; the command never ran
UPLOAD = "upload"                  # an output could not be uploaded (Azure's file_upload_error)
PYTHON = "python_exception"        # a Python task raised
CRASH = "crash"                    # the runner itself failed (not the task's fault)
NODE_LOST = "node_lost"            # the node died under the attempt (set by the dispatcher)
TERMINATED = "terminated"          # killed by job.terminate()
# Failures that count against the node (batchnb.unusable-after). Not PREPROCESSING:
# a missing input or a storage outage says nothing about the node, and counting
# it would mark every node unusable (and replace it) during an outage.
NOT_TASK_FAULT = frozenset({CRASH, NODE_LOST})


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
    env = {
        "AZ_BATCH_POOL_ID": req.pool_id,
        "AZ_BATCH_NODE_ID": node_id,
        "AZ_BATCH_NODE_ROOT_DIR": str(dirs["root"]),
        "AZ_BATCH_NODE_SHARED_DIR": str(dirs["shared"]),
        "AZ_BATCH_NODE_STARTUP_DIR": str(dirs["startup"]),
        "AZ_BATCH_NODE_IS_DEDICATED": "false" if node_id.startswith("spot") else "true",
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


def run_bundle(requests: list[AttemptRequest]) -> list[AttemptRecord]:
    """Run several small attempts one after another in one Dask task."""
    return [run_attempt(req) for req in requests]


def run_attempt(req: AttemptRequest) -> AttemptRecord:
    """Run one attempt; never raises."""
    node_id = _node_id()
    record = AttemptRecord(req.job_id, req.task_id, req.attempt, node_id, start=time.time())
    try:
        _run(req, record, node_id)
    except BaseException as exc:  # noqa: BLE001 - an attempt must report, never raise into Dask
        record.category = record.category or CRASH
        record.message = f"batchnb runner failed: {type(exc).__name__}: {exc}"
        record.stderr_tail = (record.stderr_tail + traceback.format_exc())[-TAIL_BYTES:]
    record.end = time.time()
    return record


def _run(req: AttemptRequest, record: AttemptRecord, node_id: str) -> None:
    dirs = node_dirs(req.node_root, node_id)
    # Inline when nothing needs a process of its own: a wall clock to enforce, or
    # environment variables (the worker's environment is shared by its slots).
    inline = req.python is not None and req.max_wall_clock is None and not req.env and not req.secrets
    needs_dir = not inline or req.inputs or req.outputs
    task_dir = dirs["workitems"] / req.job_id / req.task_id / str(req.attempt)
    wd = task_dir / "wd"
    if needs_dir:
        wd.mkdir(parents=True, exist_ok=True)
        dirs["shared"].mkdir(parents=True, exist_ok=True)
        record.task_dir = str(task_dir)
    if req.inputs:
        from .. import staging
        t0 = time.time()
        try:
            stats = staging.stage_in(req.inputs, wd, storage_options=req.storage_options,
                                     cache_dir=dirs["root"] / "cache")
        except StagingError as exc:
            record.category, record.message = PREPROCESSING, str(exc)
            record.stage_in_seconds = time.time() - t0
            return
        record.bytes_in, record.stage_in_seconds = stats.nbytes, time.time() - t0
    key = (req.job_id, req.task_id, req.attempt)
    with _running_lock:
        doomed = key in _terminated
    if doomed:
        _terminated.discard(key)
        record.category, record.message = TERMINATED, "killed by job.terminate() before it started"
        return
    if inline:
        from .pytask import run_inline
        run_inline(req, record, task_dir if needs_dir else None)
    else:
        _run_process(req, record, dirs, task_dir, wd, node_id, key)
    with _running_lock:
        killed = key in _terminated
        _terminated.discard(key)
    if killed:
        record.category, record.message = TERMINATED, "killed by job.terminate()"
    if req.outputs and not killed:
        _stage_out(req, record, wd, task_dir)


def _stage_out(req: AttemptRequest, record: AttemptRecord, wd: Path, task_dir: Path) -> None:
    from .. import staging
    t0 = time.time()
    outcome = "success" if record.succeeded else "failure"
    try:
        stats = staging.stage_out(req.outputs, wd, job_id=req.job_id, task_id=req.task_id, attempt=req.attempt,
                                  outcome=outcome, storage_options=req.storage_options, task_dir=task_dir)
        record.bytes_out = stats.nbytes
    except StagingError as exc:
        record.category = UPLOAD
        record.message = str(exc)
    record.stage_out_seconds = time.time() - t0


def _run_process(req, record, dirs, task_dir, wd, node_id, key) -> None:
    env = dict(os.environ)
    env.update(task_environment(req, node_id, dirs, task_dir, wd))
    if req.python is not None:
        payload = task_dir / "call.pkl"
        from .pytask import write_payload
        write_payload(req, payload)
        argv, shell = [sys.executable, "-m", "batchnb.node.pychild", str(payload)], False
    elif isinstance(req.command, str):
        argv, shell = req.command, True
    else:
        argv, shell = list(req.command), False

    def register(proc):
        with _running_lock:
            _running[key] = proc
            doomed = key in _terminated
        if doomed:  # terminate() reached this node before the process existed
            _proctree.kill_tree(proc)
    try:
        code, timed_out = _proctree.run(argv, shell=shell, cwd=str(wd), env=env,
                                        stdout_path=str(task_dir / "stdout.txt"),
                                        stderr_path=str(task_dir / "stderr.txt"),
                                        timeout=req.max_wall_clock, on_start=register)
    except OSError as exc:
        record.exit_code, record.category = 127, EXIT_CODE
        record.message = f"cannot start {argv!r}: {exc.strerror}"
        return
    finally:
        with _running_lock:
            _running.pop(key, None)
        if req.python is not None:  # it holds the storage options: not left on the node's disk
            (task_dir / "call.pkl").unlink(missing_ok=True)
    record.stdout_tail, record.stderr_tail = _tail(task_dir / "stdout.txt"), _tail(task_dir / "stderr.txt")
    if timed_out:
        record.category = TIMEOUT
        record.message = f"killed at max_wall_clock of {req.max_wall_clock:g}s with all its processes"
        return
    record.exit_code = code
    if req.python is not None:
        from .pytask import read_child
        read_child(task_dir, record, req)
    elif code != 0:
        record.category = EXIT_CODE
        record.message = f"exit code {code}"
