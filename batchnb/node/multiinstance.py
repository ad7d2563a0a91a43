"""One instance of a multi-instance (MPI) task on its node: common inputs, then the coordination command.

As Azure runs it: every instance (the primary, instance 0, included) stages the
task's ``common_inputs`` into its ``AZ_BATCH_TASK_SHARED_DIR`` and runs the
coordination command there, blocking; only when every instance's coordination
command has succeeded does the driver have the primary run the application
command (:func:`run_primary`). Like :func:`batchnb.node.runner.run_attempt`, it
never raises: it returns an :class:`AttemptRecord` whose ``node_id`` tells the
driver which instance it was.

Each instance keeps, in its attempt folder on its node::

    <task dir>/shared/                     AZ_BATCH_TASK_SHARED_DIR (common inputs)
    <task dir>/wd/                         AZ_BATCH_TASK_WORKING_DIR
    <task dir>/coordination-stdout.txt     the coordination command's output
    <task dir>/coordination-stderr.txt
"""

from __future__ import annotations

import functools
import os
import time
import traceback

from . import proctree as _proctree
from . import secrets as _secrets
from .attempt import (CRASH, PREPROCESSING, TAIL_BYTES, AttemptRecord,
                      AttemptRequest, _node_id, _running, _running_lock, _tail, _terminated, node_dirs,
                      cannot_start, register_process, settle, stage_inputs, task_environment, task_shared_dir)

COORDINATION_STDOUT = "coordination-stdout.txt"
COORDINATION_STDERR = "coordination-stderr.txt"


def run_coordination(req: AttemptRequest) -> AttemptRecord:
    """Stage the common inputs (``req.inputs``) and run the coordination command (``req.command``,
    None: nothing to run) of instance ``req.instance``; never raises."""
    node_id = _node_id()
    record = AttemptRecord(req.job_id, req.task_id, req.attempt, node_id, start=time.time())
    mask = _secrets.Masker(req.secrets.values())
    try:
        req, mask = _secrets.resolve_request(req)   # the coordination command gets the task's secrets too
        _coordinate(req, record, node_id)
    except _secrets.SecretUnavailable as exc:
        record.category, record.message = PREPROCESSING, str(exc)
    except BaseException as exc:  # noqa: BLE001 - an instance must report, never raise into Dask
        record.category = record.category or CRASH
        record.message = f"batchnb runner failed: {type(exc).__name__}: {exc}"
        record.stderr_tail = (record.stderr_tail + traceback.format_exc())[-TAIL_BYTES:]
    _secrets.mask_record(record, mask, (COORDINATION_STDOUT, COORDINATION_STDERR))
    record.end = time.time()
    return record


def run_primary(req: AttemptRequest) -> AttemptRecord:
    """The primary's application command: an ordinary attempt with the multi-instance variables."""
    from .runner import run_attempt
    return run_attempt(req)


def _coordinate(req: AttemptRequest, record: AttemptRecord, node_id: str) -> None:
    dirs = node_dirs(req.node_root, node_id)
    task_dir = dirs["workitems"] / req.job_id / req.task_id / str(req.attempt)
    wd, shared = task_dir / "wd", task_shared_dir(task_dir)
    for folder in (wd, shared, dirs["shared"]):
        folder.mkdir(parents=True, exist_ok=True)
    record.task_dir = str(task_dir)
    if not stage_inputs(req, record, shared, dirs):
        return
    key = (req.job_id, req.task_id, req.attempt)
    if req.command is None:
        record.exit_code = 0
        return
    env = dict(os.environ)
    env.update(task_environment(req, node_id, dirs, task_dir, wd))
    argv, shell = (req.command, True) if isinstance(req.command, str) else (list(req.command), False)

    out, err = task_dir / COORDINATION_STDOUT, task_dir / COORDINATION_STDERR
    try:
        code, timed_out = _proctree.run(argv, shell=shell, cwd=str(wd), env=env, stdout_path=str(out),
                                        stderr_path=str(err), timeout=req.max_wall_clock,
                                        on_start=functools.partial(register_process, key))
    except OSError as exc:
        cannot_start(record, argv, exc, "the coordination command ")
        return
    finally:
        with _running_lock:
            _running.pop(key, None)
            killed = key in _terminated
            _terminated.discard(key)
    record.stdout_tail, record.stderr_tail = _tail(out), _tail(err)
    settle(record, code, timed_out, killed,
           "the coordination command was killed at max_wall_clock of {:g}s", req.max_wall_clock)
