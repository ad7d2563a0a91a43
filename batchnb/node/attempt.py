"""One attempt's vocabulary on a node: its request and record, failure categories,
the node's folders, Azure Batch's task variables, and the registry of running
task processes that terminate, preemption and pool close kill.

Apart from :mod:`batchnb.node.runner` so that the Python-task code
(:mod:`batchnb.node.pytask`) and the start task share it without a cycle.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
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
    #: ``{name: "file:..." | "keyvault://..."}``: resolved on the node as the attempt starts
    secret_refs: dict = field(default_factory=dict)
    inputs: tuple = ()
    outputs: tuple = ()
    max_wall_clock: float | None = None
    node_root: str = ""
    storage_options: dict = field(default_factory=dict, repr=False)   # credentials: never in a repr
    result_url: str | None = None
    result_inline_max: int = 1 << 20
    host_list: tuple = ()
    #: a multi-instance task's instance on this node (0: the primary), else None; with
    #: ``host_list`` (one address per instance, primary first) it sets Azure's multi-instance variables
    instance: int | None = None
    app_packages: tuple = ()
    #: the group its backend declares for the node ("dedicated" | "spot"); None in a request
    #: made without one (a start task's), where the node's name is the fallback
    node_group: str | None = None
    #: the job has a preparation task: AZ_BATCH_JOB_PREP_DIR and AZ_BATCH_JOB_PREP_WORKING_DIR are set
    job_prep: bool = False
    #: a container task's image (a bnb.Container), and the pool's runtime for it (None: found on PATH)
    container: Any = None
    container_runtime: str | None = None


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
    #: a preprocessing or upload failure because storage stayed unreachable through the
    #: in-attempt retries (StagingError.transient): the dispatcher waits before retrying it
    transient: bool = False

    @property
    def succeeded(self) -> bool:
        return self.category is None and self.exit_code == 0


# -- registry of running attempts, so that terminate() can kill them --------
# key (job, task, attempt) -> the attempt's Popen, or an _Inline for a Python call in a worker thread
_running: dict[tuple[str, str, int], Any] = {}
_running_lock = threading.Lock()
_terminated: set[tuple[str, str, int]] = set()


class _Inline:
    """A Python attempt running in a worker thread: no process to kill, a thread to interrupt."""

    __slots__ = ("done", "ident", "signalled")

    def __init__(self, ident: int):
        self.ident, self.signalled, self.done = ident, False, threading.Event()


def _raise_in(ident: int, exc) -> None:
    """Have thread ``ident`` raise ``exc`` at its next bytecode (``None``: forget a pending one)."""
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                               None if exc is None else ctypes.py_object(exc))


def call_killable(key, fn, args, kwargs):
    """``fn(*args, **kwargs)`` in this thread, where ``kill_attempts([key])`` can stop it.

    The kill raises SystemExit in this thread: a BaseException, so a task's own
    ``except Exception`` does not swallow it. A thread blocked in C code (a sleep,
    a read) sees it only when that call returns, which is why :func:`stop_attempts`
    reports such a thread and the driver then restarts its worker process.
    """
    key = tuple(key)
    entry = _Inline(threading.get_ident())
    try:
        try:
            with _running_lock:
                if key in _terminated or _worker_closing():
                    raise SystemExit("killed by job.terminate() or its node's close before it started")
                _running[key] = entry
            return fn(*args, **kwargs)
        finally:
            _leave(key, entry)
    except BaseException:
        # The kill's exception is raised at most once, anywhere up to _leave's end: had it cut
        # the finally above short, this leaves the registry (and drops a pending one) instead.
        _leave(key, entry)
        raise


def _leave(key, entry: _Inline) -> None:
    with _running_lock:
        if _running.get(key) is entry:
            del _running[key]
        if entry.signalled and not entry.done.is_set():
            # Not landed yet: it must not land later, in the worker's own code or the next task.
            _raise_in(entry.ident, None)
        entry.done.set()


def kill_attempts(keys) -> int:
    """Kill these (job, task, attempt) keys on this worker: their process trees, and an
    exception raised in the threads of their Python calls (without waiting for those)."""
    killed = 0
    for key in keys:
        key = tuple(key)
        with _running_lock:
            if len(_terminated) > 10_000:   # kills that met no process: forget old ones
                _terminated.clear()
            _terminated.add(key)
            proc = _running.get(key)
            if isinstance(proc, _Inline):
                # Under the lock, so that it is never raised after the call has left (_leave).
                if not proc.signalled and not proc.done.is_set():
                    proc.signalled = True
                    _raise_in(proc.ident, SystemExit)
                killed += 1
                continue
        if proc is not None:
            _kill(proc)
            killed += 1
    return killed


def _kill(proc) -> None:
    """A task's process tree; for a container task, its container first (the runtime's client
    process that the registry holds is not what runs the container)."""
    stop = getattr(proc, "stop_container", None)
    if stop is not None:
        stop()
    _proctree.kill_tree(proc)


def kill_all() -> int:
    """Kill every task process of this worker (its node is preempted or its pool closes)."""
    with _running_lock:
        keys = list(_running)
    return kill_attempts(keys)


def _worker_closing() -> bool:
    """Whether the Dask worker running this thread closes: its reaper's ``kill_all`` may have run
    already, so a task process starting now would outlive the node."""
    try:
        from distributed import get_worker
        from distributed.core import Status
        worker = get_worker()
    except (ImportError, ValueError):       # not on a worker's task thread
        return False
    return worker.status in (Status.closing, Status.closed, Status.closing_gracefully, Status.failed)


def register_process(key, proc) -> None:
    """Hold an attempt's process for :func:`kill_attempts`; kill it at once if the attempt was
    killed before its process existed, or the node closed meanwhile."""
    with _running_lock:
        _running[tuple(key)] = proc
        # Under the lock: a kill_all after this sees the process, one before has set the status.
        doomed = tuple(key) in _terminated or _worker_closing()
    if doomed:
        _kill(proc)


async def kill_attempts_soon(keys) -> int:
    """``kill_attempts`` for ``client.run(..., wait=False)``, which takes only coroutines;
    the killing (which waits for the processes) runs off the worker's event loop."""
    import asyncio
    return await asyncio.get_running_loop().run_in_executor(None, kill_attempts, keys)


def stop_attempts(keys, grace: float) -> list:
    """Kill these attempts; wait up to ``grace`` seconds for their Python calls' threads to end.

    Returns the keys whose thread still runs: blocked in C code, which no exception
    reaches, so only the end of its process stops it.
    """
    keys = [tuple(k) for k in keys]
    kill_attempts(keys)
    with _running_lock:
        inline = [(k, _running[k]) for k in keys if isinstance(_running.get(k), _Inline)]
    deadline = time.monotonic() + grace
    for _, entry in inline:
        entry.done.wait(max(0.0, deadline - time.monotonic()))
    return [k for k, entry in inline if not entry.done.is_set()]


async def stop_attempts_soon(keys, grace: float, dask_worker=None) -> tuple[list, bool]:
    """``stop_attempts`` off the worker's event loop, for ``client.run``: the keys still
    running, and whether this worker would be started again (:func:`restart_worker`)."""
    import asyncio
    stuck = await asyncio.get_running_loop().run_in_executor(None, stop_attempts, keys, grace)
    return stuck, _restartable(dask_worker)


#: set by the local backend in its nodes' worker processes (``reaper.NODE_MARK``, which this
#: module cannot import): their driver starts such a process again when it dies, as a nanny does
_SUPERVISED = "BATCHNB_NODE_PROCESS"


def _restartable(dask_worker) -> bool:
    return bool(getattr(dask_worker, "nanny", None) or os.environ.get(_SUPERVISED))


def restart_worker(dask_worker=None) -> bool:
    """End this worker process at once, so that its nanny (or the local backend) starts a fresh
    one: the one way to stop a thread stuck in C code. Its task processes go first (they have
    sessions of their own and would outlive it). With nothing to start it again, nothing is
    done (the node would be lost for good): False.
    """
    if not _restartable(dask_worker):
        return False
    with _running_lock:
        procs = [p for p in _running.values() if not isinstance(p, _Inline)]
    for proc in procs:
        _kill(proc)
    os.kill(os.getpid(), signal.SIGKILL)
    return True   # not reached


def _node_id() -> str:
    try:
        from distributed import get_worker
        return str(get_worker().name)
    except (ImportError, ValueError):
        return os.environ.get("AZ_BATCH_NODE_ID", "local")


def node_dirs(node_root: str, node_id: str) -> dict[str, Path]:
    if not node_root:       # the home folder's, read each time (a test or a user may move HOME)
        return _node_dirs(os.path.expanduser("~/.batchnb/nodes"), node_id)
    return dict(_known_node_dirs(node_root, node_id))


def _node_dirs(node_root: str, node_id: str) -> dict[str, Path]:
    root = Path(node_root) / node_id
    return {"root": root, "shared": root / "shared", "startup": root / "startup",
            "applications": root / "applications", "workitems": root / "workitems"}


# Made once per node: with pathlib, making them again was a sixth of a tiny Python task's cost.
_known_node_dirs = functools.lru_cache(maxsize=64)(_node_dirs)


def task_environment(req: AttemptRequest, node_id: str, dirs: dict, task_dir: Path, wd: Path) -> dict:
    """Azure Batch's variables with their Azure meanings, then the task's own.

    The multi-instance ones (host and node lists, master node, shared dir) only on a
    multi-instance task's instances, as Azure sets them.
    """
    group = req.node_group or group_of(node_id)
    env = {
        # Azure's account holds the pools; here the pool is the nearest thing to it.
        "AZ_BATCH_ACCOUNT_NAME": req.pool_id,
        "AZ_BATCH_POOL_ID": req.pool_id,
        "AZ_BATCH_NODE_ID": node_id,
        "AZ_BATCH_NODE_ROOT_DIR": str(dirs["root"]),
        "AZ_BATCH_NODE_SHARED_DIR": str(dirs["shared"]),
        "AZ_BATCH_NODE_STARTUP_DIR": str(dirs["startup"]),
        "AZ_BATCH_NODE_STARTUP_WORKING_DIR": str(dirs["startup"] / "wd"),
        "AZ_BATCH_NODE_IS_DEDICATED": "false" if group == NodeGroup.SPOT.value else "true",
        "AZ_BATCH_JOB_ID": req.job_id,
        "AZ_BATCH_TASK_ID": req.task_id,
        "AZ_BATCH_TASK_DIR": str(task_dir),
        "AZ_BATCH_TASK_WORKING_DIR": str(wd),
        "AZ_BATCH_TASK_ATTEMPT": str(req.attempt),
        "AZ_BATCH_TASK_USER": _user(),
    }
    if req.instance is not None:
        hosts = list(req.host_list)
        env.update({
            "AZ_BATCH_HOST_LIST": ",".join(hosts),
            "AZ_BATCH_NODE_LIST": ";".join(hosts),
            # Azure's form, host:port; the port is the service's own, not one for MPI to use.
            "AZ_BATCH_MASTER_NODE": f"{hosts[0]}:{MASTER_PORT}",
            "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if req.instance == 0 else "false",
            "AZ_BATCH_TASK_SHARED_DIR": str(task_shared_dir(task_dir)),
        })
    for name, version, folder in req.app_packages:
        # The pool unpacks each package once per node, before the start task.
        folder = folder or str(dirs["applications"] / f"{name}_{version}")
        env[f"AZ_BATCH_APP_PACKAGE_{name}_{version}".replace(".", "_").replace("-", "_")] = folder
    if req.job_prep:
        prep = job_prep_dir(dirs, req.job_id)
        env["AZ_BATCH_JOB_PREP_DIR"], env["AZ_BATCH_JOB_PREP_WORKING_DIR"] = str(prep), str(prep / "wd")
    env.update(req.env)
    env.update(req.secrets)
    return env


def private_dir(path: Path) -> Path:
    """Make ``path`` and its missing parents as folders only their owner can read (0700): an
    attempt's folder holds its stdout and stderr, which may hold what the task read or printed."""
    missing, p = [], Path(path)
    while not p.exists():
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:   # another slot of the node made it first
            pass
    return Path(path)


def job_prep_dir(dirs: dict, job_id: str, name: str = "jobpreparation") -> Path:
    """The folder of a job's preparation (or, ``name="jobrelease"``, release) task on a node, as
    Azure lays it out, beside the job's task folders (a task named ``job-1`` has only numbered
    attempt folders there, so none is ever this one)."""
    return dirs["workitems"] / job_id / "job-1" / name


#: the port Azure puts in AZ_BATCH_MASTER_NODE ("10.0.0.4:6000"); reserved there for the service
MASTER_PORT = 6000


def task_shared_dir(task_dir: Path) -> Path:
    """A multi-instance task's ``AZ_BATCH_TASK_SHARED_DIR`` on one node: its common inputs land
    there, and both the coordination command and the application command see it."""
    return Path(task_dir) / "shared"


@functools.lru_cache(maxsize=None)   # the password database, once per process (it was per attempt)
def _user() -> str:
    import getpass
    try:
        return getpass.getuser()
    except (KeyError, OSError):   # a uid with no passwd entry (some containers)
        return str(os.getuid())


def cannot_start(record: AttemptRecord, argv, exc: OSError, what: str = "") -> None:
    """A command that could not be started: exit code 127, as a shell says."""
    record.exit_code, record.category = 127, EXIT_CODE
    record.message = f"cannot start {what}{argv!r}: {exc.strerror}"


def settle(record: AttemptRecord, code: int | None, timed_out: bool, killed: bool, timeout_message: str,
           limit: float | None) -> None:
    """How a command ended, on its record: killed by ``job.terminate()``, at its wall clock ``limit``
    (``timeout_message`` formatted with it), or its exit code."""
    if killed:
        record.category, record.message = TERMINATED, "killed by job.terminate()"
    elif timed_out:
        record.category, record.message = TIMEOUT, timeout_message.format(limit)
    else:
        record.exit_code = code
        if code != 0:
            record.category, record.message = EXIT_CODE, f"exit code {code}"


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def stage_inputs(req: AttemptRequest, record: AttemptRecord, dest: Path, dirs: dict) -> bool:
    """Stage ``req``'s inputs into ``dest``, timed on ``record``; False, with ``record`` failed as
    preprocessing (transient or not, as the storage said), when they could not be staged."""
    if not req.inputs:
        return True
    from .. import staging
    from ..errors import StagingError
    t0 = time.time()
    try:
        stats = staging.stage_in(req.inputs, dest, storage_options=req.storage_options,
                                 cache_dir=dirs["root"] / "cache")
    except StagingError as exc:
        record.category, record.message, record.transient = PREPROCESSING, str(exc), exc.transient
        record.stage_in_seconds = time.time() - t0
        return False
    record.bytes_in, record.stage_in_seconds = stats.nbytes, time.time() - t0
    return True
