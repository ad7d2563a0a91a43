"""A worker that closes takes its task processes with it.

Task processes run in sessions of their own (so that a wall clock can kill
their whole tree), which also means a closing worker would leave them
running: a node removed by resize, autoscale or replacement would go on
running a task that was requeued elsewhere, and the task would run twice.
"""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

from .runner import kill_all


class TaskReaper(WorkerPlugin):
    """Registered by every pool on its workers; on a worker's teardown it kills the
    worker's task processes (``runner.kill_all``)."""

    name = "batchnb-task-reaper"

    def teardown(self, worker) -> None:
        kill_all()
