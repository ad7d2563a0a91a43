"""Retention while a pool runs: a task's directories go ``retention_time`` after it ends.

A task that sets no ``retention_time`` keeps them ``batchnb.retention-time``
(7 days, Azure's default): those are swept every hour (or sooner, for a
shorter default) instead of one timer per task, so a million tasks cost no
million timers. The rules, and ``bnb.prune`` for what no live pool removes,
are in :mod:`batchnb.engine.retention`.
"""

from __future__ import annotations

import logging
import time

from ..engine.extension import PoolExtension
from ..engine.retention import apply_retention, default_retention, remove_task_dirs_soon

log = logging.getLogger("batchnb.retention")

#: The longest wait between two sweeps for tasks on the default retention.
SWEEP_EVERY = 3600.0


class RetentionExtension(PoolExtension):
    """Removes a task's directories ``retention_time`` after it ends, while the pool runs."""

    def __init__(self, engine):
        super().__init__(engine)
        self._stopped = False

    def start(self) -> None:
        every = min(SWEEP_EVERY, max(1.0, default_retention()))
        # Timers belong to the dispatcher's thread: armed from there.
        self.engine.dispatcher.post(lambda: self.engine.dispatcher.at(time.time() + every,
                                                                      lambda: self._sweep_default(every)))

    def stop(self) -> None:
        self._stopped = True

    def task_ended(self, job, tr, now: float) -> None:
        keep = tr.spec.retention_time
        if keep is None:
            return        # the periodic sweep's
        job_id, task_id = job.spec.id, tr.spec.id
        # Run after this turn's ledger commit, so the attempt's task_dir is on record.
        self.engine.dispatcher.at(now + keep, lambda: self._sweep(job_id, task_id))

    def _sweep_default(self, every: float) -> None:
        if self._stopped or self.engine.closed:
            return
        try:
            for job in list(self.engine.dispatcher.jobs.values()):
                self._sweep(job.spec.id, None)
        finally:
            self.engine.dispatcher.at(time.time() + every, lambda: self._sweep_default(every))

    def _sweep(self, job_id: str, task_id: str | None) -> None:
        def remote(paths):
            try:
                self.engine.client.run(remove_task_dirs_soon, paths, wait=False)
            except Exception as exc:  # noqa: BLE001 - the nodes may be gone, and their folders with them
                log.debug("cannot reach the nodes to remove %s: %s", paths, exc)
        try:
            apply_retention(self.engine.ledger, time.time(), job_id, task_id, remote=remote)
        except Exception:  # noqa: BLE001 - retention must never disturb the dispatcher
            log.exception("batchnb retention of %s/%s failed", job_id, task_id)
