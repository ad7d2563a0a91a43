"""Pool extensions: features that watch the engine without living in it.

The dispatcher calls the pool's hooks; the pool passes each call to its
extensions in order. Cost metering, autoscale and start tasks are each one
extension in a module of their own, so the engine stays small and each
feature is tested on its own. An extension is listed in :data:`EXTENSIONS`
by dotted path and made with the pool.
"""

from __future__ import annotations

import importlib

#: Extensions every pool gets, in the order their hooks run.
EXTENSIONS: list[str] = [
    "batchnb.extensions.starttask.StartTaskExtension",
    "batchnb.extensions.nodehealth.NodeHealthExtension",
    "batchnb.extensions.autoscale.AutoscaleExtension",
    "batchnb.extensions.chaos.ChaosExtension",
    "batchnb.extensions.spotnotice.SpotNoticeExtension",
    "batchnb.extensions.cost.CostExtension",
    "batchnb.extensions.retention.RetentionExtension",
]


class PoolExtension:
    """Base class: every hook does nothing."""

    def __init__(self, pool):
        self.pool = pool

    def start(self) -> None:
        """The pool's dispatcher runs; start timers or threads here."""

    def stop(self) -> None:
        """The pool is closing."""

    def node_joined(self, worker, now: float) -> bool:
        """A worker appeared. Return False to keep it ``starting`` (e.g. a start task runs)."""
        return True

    def node_changed(self, node, now: float) -> None:
        """A node's state changed (on the dispatcher's thread)."""

    def node_unusable(self, node_id: str) -> None:
        """A node became unusable; replace it if the backend can."""

    def task_started(self, job, tr, node, now: float) -> None:
        """An attempt was dispatched to ``node``."""

    def task_ended(self, job, tr, now: float) -> None:
        """An attempt ended, was requeued or was terminated."""

    def may_dispatch(self, job, tr, now: float) -> bool:
        """False holds the task back (e.g. the job's budget is spent)."""
        return True

    def job_ended(self, job, now: float) -> None:
        """The job completed (any reason)."""


def make_extensions(pool) -> list[PoolExtension]:
    out = []
    for path in EXTENSIONS:
        module, _, name = path.rpartition(".")
        out.append(getattr(importlib.import_module(module), name)(pool))
    return out
