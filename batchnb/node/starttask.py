"""Start tasks on the node: a command run on every node as it joins, before it gets any task.

As in Azure Batch, the start task runs in ``<node root>/startup/wd`` with
the node's ``AZ_BATCH_*`` variables (``AZ_BATCH_TASK_DIR`` is the startup
folder, where ``stdout.txt`` and ``stderr.txt`` stay), is retried up to its
own ``max_retries`` on a non-zero exit, and — with ``wait_for_success``
(Azure's default) — keeps the node ``starting`` until it succeeds. A node
whose start task fails for good is ``start_task_failed`` and gets no tasks;
the rest of the pool carries on. It runs again whenever a node rejoins
(a spot node coming back after preemption is a new machine).

The attempt itself reuses the runner's pieces (node folders, Azure's
environment, the process-tree runner), so a start task sees the same
world as a task.

The pool's side, which runs it as nodes join and holds their results, is
:class:`batchnb.extensions.starttask.StartTaskExtension`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import proctree as _proctree, runner
from ..errors import StagingError

log = logging.getLogger("batchnb.starttask")


@dataclass(frozen=True)
class StartTaskResult:
    """How a node's start task went (``pool.start_task_results()[node_id]``).

    >>> StartTaskResult("spot-0", 0, 1, None, None, "", "", 0.0, 1.0).succeeded
    True
    """

    node_id: str
    exit_code: int | None
    attempts: int
    category: str | None          # None, or a runner category (exit_code, timeout, preprocessing, crash, terminated)
    message: str | None
    stdout_tail: str
    stderr_tail: str
    start: float
    end: float
    task_dir: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.category is None and self.exit_code == 0


def start_task_environment(pool_id: str, node_id: str, dirs: dict, wd: Path, env: dict, attempt: int,
                           app_packages: tuple = (), group: str | None = None) -> dict:
    """The runner's Azure variables for a start task: no job, no task id, no host list.

    ``group`` is the node's group as its backend declares it (``AZ_BATCH_NODE_IS_DEDICATED``);
    None falls back to the node's name (:func:`batchnb.states.group_of`).
    """
    req = runner.AttemptRequest(job_id="", task_id="", attempt=attempt, pool_id=pool_id, env=dict(env),
                                app_packages=tuple(app_packages), node_group=group)
    out = runner.task_environment(req, node_id, dirs, dirs["startup"], wd)
    for name in ("AZ_BATCH_JOB_ID", "AZ_BATCH_TASK_ID", "AZ_BATCH_HOST_LIST", "AZ_BATCH_MASTER_NODE",
                 "AZ_BATCH_IS_CURRENT_NODE_MASTER"):
        out.pop(name, None)
    return out


def prepare_node(start_task, app_packages, pool_id: str, node_root: str, storage_options: dict | None,
                 node_id: str, from_bootstrap: bool = False, group: str | None = None) -> StartTaskResult:
    """On a joining node: unpack the app packages, then run the start task (or read how the VM's bootstrap ran it).

    ``group``: the node's group, as its backend declares it (see :func:`start_task_environment`).
    """
    from ..node.apppackages import install
    t0 = time.time()
    dirs = runner.node_dirs(node_root, node_id)
    try:
        installed = install(app_packages, dirs, storage_options)
    except StagingError as exc:
        return StartTaskResult(node_id, None, 0, runner.PREPROCESSING, str(exc), "", "", t0, time.time(),
                               str(dirs["startup"]))
    if start_task is None:
        return StartTaskResult(node_id, 0, 0, None, None, "", "", t0, time.time())
    if from_bootstrap:
        return read_bootstrap_result(node_root, node_id)
    return run_start_task(start_task, pool_id, node_root, storage_options, node_id, installed, group)


#: First item of a start task's key in ``runner._running`` (task keys are (job, task, attempt)).
START_KEY = "__start__"


def _register(key):
    def register(proc):
        with runner._running_lock:
            runner._running[key] = proc
    return register


def run_start_task(start_task, pool_id: str, node_root: str, storage_options: dict | None = None,
                   node_id: str | None = None, app_packages: tuple = (), group: str | None = None) -> StartTaskResult:
    """Run ``start_task`` on this node with its retries; never raises (runs on a worker)."""
    node_id = node_id or runner._node_id()
    t0 = time.time()
    dirs = runner.node_dirs(node_root, node_id)
    startup, wd = dirs["startup"], dirs["startup"] / "wd"
    attempts, code, category, message = 0, None, runner.CRASH, "the start task did not run"
    try:
        wd.mkdir(parents=True, exist_ok=True)
        dirs["shared"].mkdir(parents=True, exist_ok=True)
        if start_task.inputs:
            from .. import staging
            try:
                staging.stage_in(start_task.inputs, wd, storage_options=storage_options or {},
                                 cache_dir=dirs["root"] / "cache")
            except StagingError as exc:
                return StartTaskResult(node_id, None, 0, runner.PREPROCESSING, str(exc), "", "", t0, time.time(),
                                       str(startup))
        command = start_task.command
        argv, shell = (command, True) if isinstance(command, str) else (list(command), False)
        for attempts in range(1, start_task.max_retries + 2):
            env = dict(os.environ)
            env.update(start_task_environment(pool_id, node_id, dirs, wd, start_task.env, attempts, app_packages,
                                              group))
            # Registered with the runner's task processes, so that runner.kill_all (the pool
            # closing, the node preempted) kills it too: it runs in a session of its own and
            # would outlive its worker.
            key = (START_KEY, node_id, attempts)
            try:
                code, timed_out = _proctree.run(argv, shell=shell, cwd=str(wd), env=env,
                                                stdout_path=str(startup / "stdout.txt"),
                                                stderr_path=str(startup / "stderr.txt"),
                                                timeout=start_task.max_wall_clock, on_start=_register(key))
            except OSError as exc:
                code, timed_out = 127, False
                category, message = runner.EXIT_CODE, f"cannot start {argv!r}: {exc.strerror}"
                continue
            finally:
                with runner._running_lock:
                    runner._running.pop(key, None)
                    killed = key in runner._terminated
                    runner._terminated.discard(key)
            if killed:          # no retry: the node is going away
                category, message = runner.TERMINATED, "killed: the node was preempted or its pool closed"
                break
            if timed_out:
                category = runner.TIMEOUT
                message = f"killed at max_wall_clock of {start_task.max_wall_clock:g}s"
            elif code != 0:
                category, message = runner.EXIT_CODE, f"exit code {code}"
            else:
                category, message = None, None
                break
    except BaseException as exc:  # noqa: BLE001 - report, never raise into Dask
        category, message = runner.CRASH, f"batchnb start task runner failed: {type(exc).__name__}: {exc}"
    return StartTaskResult(node_id, code, attempts, category, message, runner._tail(startup / "stdout.txt"),
                           runner._tail(startup / "stderr.txt"), t0, time.time(), str(startup))


def bootstrap_script(start_task, pool_id: str, node_id: str, node_root: str, group: str | None = None) -> str:
    """The start task as a POSIX shell script for a VM's bootstrap (cloud-init), with Azure's semantics.

    It runs before the node's worker starts, in ``<node root>/<node>/startup/wd``
    with the node's ``AZ_BATCH_*`` variables, retries up to ``max_retries``, and
    leaves ``stdout.txt``, ``stderr.txt`` and ``result.json`` in the startup
    folder, where :func:`read_bootstrap_result` finds them once the worker runs.

    >>> from batchnb import StartTask
    >>> script = bootstrap_script(StartTask("true"), "p", "vm-3", "/mnt/batch/tasks", group="spot")
    >>> [line for line in script.splitlines() if "AZ_BATCH_NODE_I" in line]
    ['export AZ_BATCH_NODE_ID=vm-3', 'export AZ_BATCH_NODE_IS_DEDICATED=false']
    """
    import shlex
    dirs = runner.node_dirs(node_root, node_id)
    wd = dirs["startup"] / "wd"
    env = start_task_environment(pool_id, node_id, dirs, wd, start_task.env, 1, group=group)
    env.pop("AZ_BATCH_TASK_ATTEMPT", None)
    command = start_task.command if isinstance(start_task.command, str) else shlex.join(start_task.command)
    limit = f"timeout {start_task.max_wall_clock:g}s " if start_task.max_wall_clock else ""
    return "\n".join([
        "#!/bin/sh",
        "# batchnb start task: runs on the node before its Dask worker starts",
        *(f"export {k}={shlex.quote(str(v))}" for k, v in env.items()),
        'mkdir -p "$AZ_BATCH_TASK_WORKING_DIR" "$AZ_BATCH_NODE_SHARED_DIR" && cd "$AZ_BATCH_TASK_WORKING_DIR" || exit 1',
        f"max={start_task.max_retries + 1}; n=0; started=$(date +%s)",
        "while :; do",
        "  n=$((n + 1)); export AZ_BATCH_TASK_ATTEMPT=$n",
        f'  {limit}/bin/sh -c {shlex.quote(command)} > "$AZ_BATCH_TASK_DIR/stdout.txt" '
        '2> "$AZ_BATCH_TASK_DIR/stderr.txt" < /dev/null',
        "  rc=$?",
        '  if [ "$rc" -eq 0 ] || [ "$n" -ge "$max" ]; then break; fi',
        "done",
        "printf '{\"exit_code\": %d, \"attempts\": %d, \"start\": %s, \"end\": %s, \"timeout\": %s}\\n' "
        f'"$rc" "$n" "$started" "$(date +%s)" "{"true" if limit else "false"}" > "$AZ_BATCH_TASK_DIR/result.json"',
        "",
    ])


def read_bootstrap_result(node_root: str, node_id: str | None = None) -> StartTaskResult:
    """On a worker: how the start task of its VM's bootstrap went (see :func:`bootstrap_script`)."""
    import json
    node_id = node_id or runner._node_id()
    startup = runner.node_dirs(node_root, node_id)["startup"]
    now = time.time()
    try:
        info = json.loads((startup / "result.json").read_text())
    except (OSError, ValueError) as exc:
        return StartTaskResult(node_id, None, 0, runner.CRASH, f"no start task result in {startup}: {exc}",
                               "", "", now, now, str(startup))
    code = int(info["exit_code"])
    category = message = None
    if code == 124 and info.get("timeout"):
        category, message = runner.TIMEOUT, "killed at the start task's max_wall_clock"
    elif code != 0:
        category, message = runner.EXIT_CODE, f"exit code {code}"
    return StartTaskResult(node_id, code, int(info["attempts"]), category, message,
                           runner._tail(startup / "stdout.txt"), runner._tail(startup / "stderr.txt"),
                           float(info.get("start") or now), float(info.get("end") or now), str(startup))


async def off_the_loop(fn, *args):
    """Run ``fn`` on a worker in a thread of its own (for ``client.run``, which awaits coroutines)."""
    import asyncio
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
