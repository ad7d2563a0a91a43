"""Queued bundles: a node's next bundle of tiny tasks waits on the node, not in the driver.

A mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`, run on its thread.

A bundle's round trip (its end heard by the driver, its records fetched and
recorded, the next bundle made and sent and received) took about 50 ms here,
and the node sat idle through it: 1,000 ``/bin/true`` tasks on two nodes left
each node idle for about 200 of its 900 ms, in four such gaps. So while every
slot of a node runs a bundle of tiny tasks, the dispatcher sends that node one
more bundle ahead (:meth:`QueuedBundles.send_queued`), which Dask's worker
starts the moment a slot frees.

Its tasks do not start until then: they stay ``active`` while they wait, out of
the ready queue, marked with the bundle's key (``TaskRun.queued``; the
dispatcher's ``queued_keys`` holds each queued bundle's members until it
starts). Once the node gives a slot back (the bundle before it ended), the
queued bundle takes that slot and its tasks start as any bundle's do, at the next scheduling pass
(:meth:`QueuedBundles.start_queued`: after the turn recorded the attempts that
ended, so the slot is free for the cost meter too), or as their records come
back, if that is sooner. Should the queued bundle never run (its node lost, its
Dask task cancelled or failed, the node's tasks terminated), its tasks go back
to the ready queue as if they had never left it: no attempt, no requeue.

A bundle is queued only while the ready queue holds a bundle of at least an
eighth of ``bundle-target`` for every slot: near a job's end, tasks waiting
behind one node's slots would be tasks another node, free sooner, could run,
and a task that looks tiny by its pool's pace may run long (a bundle queued
behind it waits as long). A queued bundle holds the node's share of the ready
tasks (:func:`~batchnb.engine.bundles.balanced_share`): what lets the node end
when the others end their bundles and theirs.
"""

from __future__ import annotations

import heapq

from ..states import TaskState


class QueuedBundles:
    """Needs the dispatcher's ``nodes``, ``ready``, ``inflight``, ``engine``, ``preps``, the bundle
    methods (``tiny``, ``pace_of``, ``_bundle_floor``, ``_bundle_size``, ``fill_bundle``,
    ``start_riding``) and ``_submit``."""

    def send_queued(self, now: float) -> None:
        """Send a bundle ahead to each node whose slots all run bundles of tiny tasks."""
        for node in self.nodes.nodes.values():
            if not self.ready:
                return
            if not node.may_queue or node.node_id in self.nodes.held or not self._runs_tiny(node):
                continue
            members = self._queue_head(node, now)
            if members:
                self._submit(node, members, now, queued=True)

    def _runs_tiny(self, node) -> bool:
        """Whether all the node runs are bundles of tiny tasks (not a long task, a job preparation's
        hold or a multi-instance task's): a bundle queued there starts soon."""
        for key in node.running:
            entry = self.inflight.get(key)
            if entry is None or not entry[2]:
                return False
            tr = self._lookup(*entry[2][0][:2])[1]
            if tr is None or not self.tiny(tr):
                return False
        return bool(node.running)

    def _queue_head(self, node, now: float) -> list:
        """The tasks at the head of the ready queue that may wait on ``node``: [(job, tr)]."""
        while self.ready:
            entry = self.ready[0]
            job, tr = self._lookup(entry[3], entry[4])
            if tr is None or not self.dispatchable(job, tr):
                heapq.heappop(self.ready)
                continue
            floor = self._bundle_floor(self.pace_of(job, tr))
            if floor is None or len(self.ready) < floor * self.nodes.total_slots() or not self.tiny(tr) \
                    or self.fallback_group(job, tr) not in (None, node.group) \
                    or not self.preps.ready_on(job, node) or not self.engine.may_dispatch(job, tr, now):
                return []       # the head goes first, from the driver, once a slot frees
            heapq.heappop(self.ready)
            size = self._bundle_size(job, tr, node, now, queued=True)
            return self.fill_bundle(node, [(job, tr)], {(entry[3], entry[4])}, size)
        return []

    def queued_back(self, job, tr, n: int) -> bool:
        """Put ``tr`` back in the ready queue if attempt ``n`` is one it waited to start in a queued
        bundle that will not run; whether it was."""
        if tr is None or tr.queued is None or tr.n + 1 != n:
            return False
        self.queued_keys.pop(tr.queued, None)
        tr.queued = None
        if tr.state != TaskState.ACTIVE:
            return True         # ended meanwhile (its job terminated): nothing to run again
        self.push_ready(job, tr)
        return True

    def start_queued(self, now: float) -> None:
        """Queued bundles whose node has a slot free again take it: their tasks start."""
        for node in self.nodes.nodes.values():
            if node.queued is not None and node.free > 0:
                self.promote(node, now)

    def promote(self, node, now: float) -> None:
        """The bundle queued on ``node`` holds a slot from ``now``: its waiting tasks start."""
        key, node.queued = node.queued, None
        waiting = []
        for job_key, task_key, n in self.queued_keys.pop(key, ()):
            job, tr = self._lookup(job_key, task_key)
            if tr is not None and tr.queued == key:
                tr.queued = None
                if tr.n + 1 == n and self.dispatchable(job, tr):
                    waiting.append((job, tr))
        # Sharing the slot as a bundle's members do, from now: the live cost meter and the ledger's
        # replay of it (from ``dispatched``) count the slot as held by the bundle before until now.
        for job, tr in waiting:
            self.start_riding(job, tr, node, now, now, 1 / len(waiting))
        self.nodes.take(node, key, 1, now)      # given back as the bundle's result is recorded

    def never_started(self, key: str, keys: list) -> None:
        """The Dask task ``key`` ended before it was promoted: those of its tasks still waiting in
        it go back to the queue."""
        self.queued_keys.pop(key, None)
        for job_key, task_key, n in keys:
            job, tr = self._lookup(job_key, task_key)
            if tr is not None and tr.queued == key:
                self.queued_back(job, tr, n)
