"""Whether a pool's jobs can make progress: a mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`.

A pool is stalled while tasks wait and no node is up or on its way to run them. Its
dispatcher is failing while its turns fail one after another, and for good once a
failed turn's writes could not be recorded: what it did since is in memory only, and
the ledger would never show its jobs ending. ``job.wait()`` reads either
(:meth:`Stalls.why_stuck`) and raises :class:`batchnb.PoolStalled` once it has lasted
``batchnb.stall-grace``.
"""

from __future__ import annotations

import logging
import time

from .events import PoolStalledChanged
from ..states import JobState, NodeState

log = logging.getLogger("batchnb.dispatch")

# Nodes asked for that have no worker yet: starting up, restarting, or back from preemption.
_WAITING_FOR_WORKER = frozenset({NodeState.STARTING, NodeState.OFFLINE, NodeState.PREEMPTED})


class Stalls:
    """Needs the dispatcher's ``jobs``, ``nodes``, ``engine``, ``events``, ``stalled``, ``failing``
    and ``_lost_writes``."""

    def why_stuck(self) -> tuple[float, str] | None:
        """(since, why) while the pool's jobs cannot make progress, else None."""
        return self.failing or self.stalled

    def turn_went_through(self) -> None:
        if not self._lost_writes:
            self.failing = None

    def turn_failed(self, exc: BaseException, recorded: bool) -> None:
        """A turn raised ``exc``; ``recorded``: its writes went into the ledger all the same."""
        why = f"{type(exc).__name__}: {exc}"
        since = self.failing[0] if self.failing else time.time()
        if not recorded:
            self._lost_writes = True
            self.failing = (since, f"pool {self.engine.name!r} could not record its work in the ledger "
                                   f"({why}); close it and resume the job (pool.job(id)) once the ledger "
                                   "can be written")
        elif self.failing is None:
            self.failing = (since, f"pool {self.engine.name!r} cannot go on dispatching: its turns fail ({why})")

    def _check_progress(self, now: float) -> None:
        """Note (and log once) when tasks wait and no node is up or on its way to run them."""
        waiting = any(job.state == JobState.ACTIVE and not job.idle for job in self.jobs.values())
        coming = [n for n in self.nodes.nodes.values()
                  if n.schedulable or n.state in _WAITING_FOR_WORKER]
        if not waiting or coming or self.engine.spec.autoscale is not None:
            if self.stalled is not None:
                log.warning("pool %s: a node can run tasks again", self.engine.name)
                self.events.append(PoolStalledChanged(self.engine.name, now, ""))
            self.stalled = None
            return
        if self.stalled is None:
            states = ", ".join(f"{n.node_id} {n.state.value}" for n in self.nodes.nodes.values())
            why = (f"pool {self.engine.name!r} has no node that can run its tasks"
                   + (f" ({states})" if states else " (it has no nodes: resize it)"))
            log.warning("%s; its jobs cannot make progress", why)
            self.stalled = (now, why)
            self.events.append(PoolStalledChanged(self.engine.name, now, why))
