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

import functools
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from . import proctree as _proctree
from . import secrets as _secrets
from ..errors import StagingError

from .attempt import (  # noqa: F401 - the runner's vocabulary, re-exported for its callers
    AttemptRecord, AttemptRequest, CRASH, EXIT_CODE, NODE_LOST, NOT_TASK_FAULT, PREPROCESSING, PYTHON,
    TAIL_BYTES, TERMINATED, TIMEOUT, UPLOAD, kill_all, kill_attempts, kill_attempts_soon, node_dirs,
    private_dir, register_process, restart_worker, stop_attempts, stop_attempts_soon, task_environment,
    _node_id, _running, _running_lock,
    _tail, _terminated, cannot_start, stage_inputs)
from .pytask import read_child, run_inline, write_payload
from .taskdir import drop_if_empty
from . import quickrun as _quickrun


def run_attempt(req: AttemptRequest, drop=drop_if_empty) -> AttemptRecord:
    """Run one attempt; never raises. ``drop`` removes a succeeded attempt's empty folder (a bundle
    leaves that to a background thread: :func:`batchnb.node.quickrun.drop_later`)."""
    node_id = _node_id()
    record = AttemptRecord(req.job_id, req.task_id, req.attempt, node_id, start=time.time())
    mask = _secrets.Masker(req.secrets.values())
    try:
        if req.secret_refs:
            resolved = _secrets.resolve(req.secret_refs)
            mask = _secrets.Masker([*req.secrets.values(), *resolved.values()])
            req = replace(req, secrets={**req.secrets, **resolved}, secret_refs={})
        _run(req, record, node_id)
    except _secrets.SecretUnavailable as exc:
        # Not retried by the dispatcher's rules for a command: like a missing input, the task never ran.
        record.category, record.message = PREPROCESSING, str(exc)
    except BaseException as exc:  # noqa: BLE001 - an attempt must report, never raise into Dask
        record.category = record.category or CRASH
        record.message = f"batchnb runner failed: {type(exc).__name__}: {exc}"
        record.stderr_tail = (record.stderr_tail + traceback.format_exc())[-TAIL_BYTES:]
    if mask:
        _secrets.mask_record(record, mask)
    record.end = time.time()
    drop(record)                # a succeeded attempt's folder that holds nothing is not kept
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
        private_dir(wd)
        dirs["shared"].mkdir(parents=True, exist_ok=True)
        record.task_dir = str(task_dir)
    if not stage_inputs(req, record, wd, dirs):
        return
    key = (req.job_id, req.task_id, req.attempt)
    with _running_lock:
        doomed = key in _terminated
    if doomed:
        _terminated.discard(key)
        record.category, record.message = TERMINATED, "killed by job.terminate() before it started"
        return
    if inline:
        run_inline(req, record, dirs, task_dir, made=bool(needs_dir))
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
        record.category, record.message, record.transient = UPLOAD, str(exc), exc.transient
    record.stage_out_seconds = time.time() - t0


def _run_process(req, record, dirs, task_dir, wd, node_id, key) -> None:
    env = dict(os.environ)
    env.update(task_environment(req, node_id, dirs, task_dir, wd))
    run, plan = _quickrun.run, None
    if req.container is not None:
        from . import container as _container
        plan = _container.plan(req, record, env, dirs, task_dir, wd, node_id)
        if plan is None:
            return      # the record says why: no runtime, or no image
        argv, shell, run = plan.argv, False, plan.run
    elif req.python is not None:
        payload = task_dir / "call.pkl"
        write_payload(req, payload)
        argv, shell = [sys.executable, "-m", "batchnb.node.pychild", str(payload)], False
    elif isinstance(req.command, str):
        argv, shell = req.command, True
    else:
        argv, shell = list(req.command), False

    try:
        code, timed_out = run(argv, shell=shell, cwd=str(wd), env=env,
                                        stdout_path=str(task_dir / "stdout.txt"),
                                        stderr_path=str(task_dir / "stderr.txt"),
                                        timeout=req.max_wall_clock,
                                        on_start=functools.partial(register_process, key))
    except OSError as exc:
        cannot_start(record, argv, exc)
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
        read_child(task_dir, record, req)
    elif code != 0:
        record.category = EXIT_CODE
        record.message = f"exit code {code}"
        if plan is not None:
            plan.explain(record, record.stderr_tail)
