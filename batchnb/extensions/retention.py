"""Retention while a pool runs: a task's directories go ``retention_time`` after it ends.

The rules, and ``bnb.prune`` for what no live pool removes, are in
:mod:`batchnb.engine.retention`.
"""

from __future__ import annotations

import logging
import time

from ..engine.extension import PoolExtension
from ..engine.retention import apply_retention, remove_task_dirs_soon

log = logging.getLogger("batchnb.retention")


class RetentionExtension(PoolExtension):
    """Removes a task's directories ``retention_time`` after it ends, while the pool runs."""

    def task_ended(self, job, tr, now: float) -> None:
        keep = tr.spec.retention_time
        if keep is None:
            return
        job_id, task_id = job.spec.id, tr.spec.id
        # Run after this turn's ledger commit, so the attempt's task_dir is on record.
        self.engine.dispatcher.at(now + keep, lambda: self._sweep(job_id, task_id))

    def _sweep(self, job_id: str, task_id: str) -> None:
        def remote(paths):
            try:
                self.engine.client.run(remove_task_dirs_soon, paths, wait=False)
            except Exception as exc:  # noqa: BLE001 - the nodes may be gone, and their folders with them
                log.debug("cannot reach the nodes to remove %s: %s", paths, exc)
        try:
            apply_retention(self.engine.ledger, time.time(), job_id, task_id, remote=remote)
        except Exception:  # noqa: BLE001 - retention must never disturb the dispatcher
            log.exception("batchnb retention of %s/%s failed", job_id, task_id)
