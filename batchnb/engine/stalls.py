"""Whether a pool's jobs can make progress: a mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`.

A pool is stalled while tasks wait and no node is up or on its way to run them;
``job.wait()`` reads ``stalled`` and raises :class:`batchnb.PoolStalled` once it
has lasted ``batchnb.stall-grace``.
"""

from __future__ import annotations

import logging

from .events import PoolStalledChanged
from ..states import JobState, NodeState

log = logging.getLogger("batchnb.dispatch")

# Nodes asked for that have no worker yet: starting up, restarting, or back from preemption.
_WAITING_FOR_WORKER = frozenset({NodeState.STARTING, NodeState.OFFLINE, NodeState.PREEMPTED})


class Stalls:
    """Needs the dispatcher's ``jobs``, ``nodes``, ``engine``, ``events`` and ``stalled``."""

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
