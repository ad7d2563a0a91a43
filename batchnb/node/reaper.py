"""A worker that closes takes its task processes with it.

Task processes run in sessions of their own (so that a wall clock can kill
their whole tree), which also means a closing worker would leave them
running: a node removed by resize, autoscale or replacement would go on
running a task that was requeued elsewhere, and the task would run twice.

Local nodes are processes in sessions of their own too (so that an interrupt
of the driver does not reach them); they must not outlive their driver, whose
process holds their scheduler. Each is started with two variables: its own
mark (``BATCHNB_NODE_PROCESS``), which every task process and every child of
one inherits, so that a child that left the tree (``setsid -f``) is still
found; and its driver's pid (``BATCHNB_DRIVER_PID``), watched by
:func:`watch_driver`. This module is also those nodes' Dask preload.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from distributed.diagnostics.plugin import WorkerPlugin

from .runner import kill_all

log = logging.getLogger("batchnb.node.reaper")

#: environment variable holding a node process's mark, inherited by its task processes
NODE_MARK = "BATCHNB_NODE_PROCESS"
#: environment variable holding the pid of the driver that started a local node
DRIVER_PID = "BATCHNB_DRIVER_PID"
#: seconds a node whose driver is gone has to close by itself before it ends itself
DRIVER_GONE_GRACE = 5.0


class TaskReaper(WorkerPlugin):
    """Registered by every pool on its workers; on a worker's teardown it kills the
    worker's task processes (``runner.kill_all``), and on a local node also every
    process carrying the node's mark."""

    name = "batchnb-task-reaper"

    def teardown(self, worker) -> None:
        kill_all()
        mark = os.environ.get(NODE_MARK)
        if mark:
            kill_marked(mark)


def kill_marked(mark: str) -> int:
    """SIGKILL every task process (or child of one) of the node process marked ``mark``.

    Only processes that also carry a task's ``AZ_BATCH_NODE_ID`` count, so the
    node process itself and anything else it started are spared. Returns how
    many were killed; they are gone (not merely signalled) when it returns,
    or after 5 s at most.
    """
    import psutil
    me, doomed = os.getpid(), []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(NODE_MARK) == mark and "AZ_BATCH_NODE_ID" in env:
            try:
                proc.kill()
                doomed.append(proc)
            except psutil.Error:
                pass
    psutil.wait_procs(doomed, timeout=5)
    return len(doomed)


def watch_driver(worker, driver_pid: int, grace: float = DRIVER_GONE_GRACE, interval: float = 0.5):
    """Close ``worker`` once the process ``driver_pid`` is no longer its parent.

    The parent changes when the driver dies (the node is handed to init), which,
    unlike a pid, cannot be confused with a new process. Normally the worker has
    closed already by then (its scheduler's connection broke), killing its tasks
    on the way; this watch is for a worker that did not notice or cannot finish
    closing (a stuck task thread): after ``grace`` seconds it kills the task
    processes itself and ends the process.
    """
    def watch() -> None:
        while os.getppid() == driver_pid:
            time.sleep(interval)
        log.warning("batchnb: node %s lost its driver (pid %s); closing", worker.name, driver_pid)
        try:
            worker.loop.add_callback(worker.close, reason="batchnb-driver-gone")
        except Exception as exc:  # noqa: BLE001 - a loop that is gone: the hard stop below still comes
            log.debug("batchnb: could not ask node %s to close: %s", worker.name, exc)
        time.sleep(grace)
        log.warning("batchnb: node %s did not close within %ss of losing its driver; ending it",
                    worker.name, grace)
        kill_all()
        mark = os.environ.get(NODE_MARK)
        if mark:
            kill_marked(mark)
        os._exit(1)

    thread = threading.Thread(target=watch, name="batchnb-driver-watch", daemon=True)
    thread.start()
    return thread


def dask_setup(worker) -> None:
    """The Dask preload hook of local nodes: watch the driver that started this one."""
    pid = os.environ.pop(DRIVER_PID, None)      # the node's own: its task processes need not see it
    if pid:
        watch_driver(worker, int(pid))
