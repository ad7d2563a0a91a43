"""A job's preparation and release tasks on a node (:class:`~batchnb.JobPrep`, :class:`~batchnb.JobRelease`).

As in Azure Batch, the preparation task runs in
``<node root>/workitems/<job>/job-1/jobpreparation/wd`` (the job's tasks on the
node see it as ``AZ_BATCH_JOB_PREP_WORKING_DIR``, its parent as
``AZ_BATCH_JOB_PREP_DIR``), with its inputs staged there and its retries; the
release task runs in ``.../jobrelease/wd`` once the job's task processes on
the node have ended. Both keep ``stdout.txt`` and ``stderr.txt`` in their
folder and are registered with the runner's running processes, so that a
terminate, a preemption or the pool closing kills them.

The driver's side, which decides where and when they run and records them,
is :mod:`batchnb.engine.jobprep`.
"""

from __future__ import annotations

import functools
import os
import time

from . import proctree as _proctree
from .attempt import (CRASH, EXIT_CODE, PREPROCESSING, TERMINATED, TIMEOUT, AttemptRequest, _node_id, _running,
                      _running_lock, _tail, _terminated, job_prep_dir, kill_attempts, node_dirs, register_process,
                      task_environment)
from ..errors import StagingError

#: The task ids Azure gives them by default; with the job id, the keys under which they run.
PREP_TASK, RELEASE_TASK = "jobpreparation", "jobrelease"


def prep_key(job_id: str, name: str = PREP_TASK) -> tuple[str, str, int]:
    """The key of a job's preparation (or release) task among this node's running processes."""
    return (job_id, name, 0)


def _environment(job_id: str, name: str, attempt: int, pool_id: str, node_id: str, dirs: dict, task_dir, wd,
                 env: dict, group: str | None, app_packages: tuple) -> dict:
    # The preparation task itself has no AZ_BATCH_JOB_PREP_* (Azure sets them for the others).
    req = AttemptRequest(job_id=job_id, task_id=name, attempt=attempt, pool_id=pool_id, env=dict(env),
                         app_packages=tuple(app_packages), node_group=group, job_prep=name != PREP_TASK)
    out = dict(os.environ)
    out.update(task_environment(req, node_id, dirs, task_dir, wd))
    for multi in ("AZ_BATCH_HOST_LIST", "AZ_BATCH_NODE_LIST", "AZ_BATCH_MASTER_NODE",
                  "AZ_BATCH_IS_CURRENT_NODE_MASTER", "AZ_BATCH_TASK_SHARED_DIR"):
        out.pop(multi, None)
    return out


def _once(job_id: str, name: str, spec, attempt: int, pool_id: str, node_id: str, dirs: dict, group,
          app_packages: tuple, storage_options: dict | None) -> dict:
    """One attempt: a record with its exit code, category, message and the tails of its output."""
    task_dir = job_prep_dir(dirs, job_id, name)
    wd = task_dir / "wd"
    rec = {"attempt": attempt, "exit_code": None, "category": None, "message": None, "start": time.time(),
           "end": None, "stdout": "", "stderr": "", "task_dir": str(task_dir)}
    key = prep_key(job_id, name)
    try:
        wd.mkdir(parents=True, exist_ok=True)
        dirs["shared"].mkdir(parents=True, exist_ok=True)
        inputs = getattr(spec, "inputs", ())
        if inputs:
            from .. import staging
            try:
                staging.stage_in(inputs, wd, storage_options=storage_options or {}, cache_dir=dirs["root"] / "cache")
            except StagingError as exc:
                rec.update(category=PREPROCESSING, message=str(exc), end=time.time())
                return rec
        command = spec.command
        argv, shell = (command, True) if isinstance(command, str) else (list(command), False)
        env = _environment(job_id, name, attempt, pool_id, node_id, dirs, task_dir, wd, spec.env, group, app_packages)

        try:
            code, timed_out = _proctree.run(argv, shell=shell, cwd=str(wd), env=env,
                                            stdout_path=str(task_dir / "stdout.txt"),
                                            stderr_path=str(task_dir / "stderr.txt"),
                                            timeout=spec.max_wall_clock,
                                            on_start=functools.partial(register_process, key))
        except OSError as exc:
            rec.update(exit_code=127, category=EXIT_CODE, message=f"cannot start {argv!r}: {exc.strerror}")
            return rec
        finally:
            with _running_lock:
                _running.pop(key, None)
        rec.update(stdout=_tail(task_dir / "stdout.txt"), stderr=_tail(task_dir / "stderr.txt"))
        with _running_lock:
            killed = key in _terminated
        if killed:
            rec.update(category=TERMINATED, message="killed: its job ended, or its node or pool went away")
        elif timed_out:
            rec.update(category=TIMEOUT, message=f"killed at max_wall_clock of {spec.max_wall_clock:g}s")
        else:
            rec["exit_code"] = code
            if code != 0:
                rec.update(category=EXIT_CODE, message=f"exit code {code}")
    except BaseException as exc:  # noqa: BLE001 - report, never raise into Dask
        rec.update(category=CRASH, message=f"batchnb job preparation runner failed: {type(exc).__name__}: {exc}")
    rec["end"] = time.time()
    return rec


def run_job_prep(job_id: str, prep, pool_id: str, node_root: str, storage_options: dict | None = None,
                 node_id: str | None = None, group: str | None = None, app_packages: tuple = ()) -> list[dict]:
    """Run a job's preparation task on this node with its retries; its attempts' records. Never raises."""
    node_id = node_id or _node_id()
    dirs = node_dirs(node_root, node_id)
    key = prep_key(job_id)
    policy = prep.policy
    attempts: list[dict] = []
    try:
        while True:
            rec = _once(job_id, PREP_TASK, prep, len(attempts) + 1, pool_id, node_id, dirs, group, app_packages,
                        storage_options)
            attempts.append(rec)
            if rec["category"] in (None, TERMINATED) or not policy.allows(len(attempts)):
                break
            # The delay is waited out here, where a kill (the job ended) can cut it short.
            until = time.monotonic() + policy.delay_before(len(attempts))
            while time.monotonic() < until and key not in _terminated:
                time.sleep(min(0.2, max(0.0, until - time.monotonic())))
            if key in _terminated:
                break
    finally:
        with _running_lock:
            _terminated.discard(key)
    return attempts


def run_job_release(job_id: str, release, pool_id: str, node_root: str, node_id: str | None = None,
                    group: str | None = None, app_packages: tuple = ()) -> dict:
    """Run a job's release task on this node, once its task processes here have ended. Never raises."""
    node_id = node_id or _node_id()
    with _running_lock:
        # A terminate's kill may still be on its way: the release runs after the job's tasks, as in Azure.
        left = [k for k in _running if str(k[0]).lower() == job_id.lower() and k[1] != RELEASE_TASK]
    if left:
        kill_attempts(left)
    try:
        return _once(job_id, RELEASE_TASK, release, 1, pool_id, node_id, node_dirs(node_root, node_id), group,
                     app_packages, None)
    finally:
        with _running_lock:
            _terminated.discard(prep_key(job_id, RELEASE_TASK))
