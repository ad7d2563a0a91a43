"""Bundles: tiny tasks ride together in one Dask task, and a chain runs on without a round trip.

A mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`, run on its thread.

**What is tiny.** A task may share a Dask task with others (:meth:`Bundles.tiny`)
when it needs one slot and nothing of its own on the node: no multi-instance
run, no inputs or outputs to stage, no container, no secrets; and only while
the pool's recent attempts are short (their moving average, a quarter of
``batchnb.bundle-target`` or less). A task with staging, a container, secrets
or more slots always goes alone.

**Chains.** When a bundle is sent, a ready-to-be successor of each of its tasks
goes with it (:meth:`Bundles.carry`), and its own successor, and so on, up to
about ``bundle-target`` of work: a tiny task that is ``pending`` only on a task
of the bundle (its other dependencies are satisfied), whose predecessor's
success satisfies its dependents and asks nothing of the job (its exit
conditions for exit code 0, if any, say ``satisfy`` and job action ``none``).
The node runs such a successor right after its predecessor succeeds, with the
predecessor's result as its argument (:func:`batchnb.node.bundle.run_bundle`);
any other outcome stops that branch there, and the driver then does what it
always does (retry, block or satisfy per the exit conditions, terminate the job).
Of a task's several such successors (a fan-out) only the first rides on: the
others are made ready by the driver, so that they spread over the nodes.

Each carried task is its own task in the ledger: it stays ``pending`` while it
rides and, when the bundle's records come back, it is started and ended from
its own record (:meth:`Bundles.start_carried`), one attempt row with the
node's times, in the order the node ran them. Its key (attempt ``n + 1``) is
among the bundle's members, so a job's terminate kills it on the node and a
lost node forgets it (it was never shown running, so it is not requeued: it
is still ``pending`` on its predecessor, which is).
"""

from __future__ import annotations

import itertools
import math
import time

from ..node.attempt import AttemptRequest
from ..node import bundle as _bundle
from ..node import runner
from ..states import TaskState
from .outcome import dependency_action

#: carried tasks per bundle at most, whatever the pool's average says
MAX_CARRIED = 500


class Bundles:
    """Needs the dispatcher's ``jobs``, ``nodes``, ``ready``, ``inflight``, ``queued_keys``, ``batch``,
    ``engine``, ``preps``, ``_bundle_target``, ``_pace``, ``_inline_max``, ``_lookup`` and the outcome
    methods (``set_state``, ``finished``, ``fallback_group``)."""

    @staticmethod
    def tiny(tr) -> bool:
        """May ``tr`` share a Dask task (see the module's docstring)?"""
        s = tr.spec
        return s.required_slots == 1 and s.multi_instance is None and not s.inputs and not s.outputs \
            and s.container is None and not s.secrets

    bundleable = tiny       # the dispatcher's rule for tasks sent together, in place of Outcomes'

    def _bundle_size(self, job, tr, node=None, now: float | None = None, queued: bool = False) -> int:
        """Tasks per Dask task, for a bundle that ``tr`` opens on ``node``: 1 until tasks like it prove
        tiny, then enough to fill ~bundle_target; ``queued``: a bundle sent ahead to wait behind the
        node's busy slots (queued.py).

        Slots free together share the ready tasks evenly (four tasks and two idle nodes: two
        each, whatever the pool's average says). Otherwise the bundle takes what lets its slot end
        about when the others end what they have (:func:`balanced_share`), their backlogs
        estimated (:meth:`_backlogs`). A share of the queue over all slots left the backlogs out:
        near a job's end the node that freed first took half of what was left while the other
        still had most of a bundle to run, then idled (1,000 ``/bin/true`` tasks on two nodes,
        twelve jobs each way here: the last node ended a median 49 ms after an even split of the
        nodes' work would have, 38 ms with the backlogs counted).

        A bundle holds at least an eighth of ``bundle_target`` of work, or what is left: each
        bundle costs a round trip (its result fetched and recorded, the next one made and sent,
        about 15-25 ms here), and shares that halve as the queue drains made a tail of bundles of
        13, 7, 3, 2, 1 tasks that cost more in round trips than the spread saved.
        """
        avg = self.pace_of(job, tr)
        floor = self._bundle_floor(avg)
        if floor is None:
            return 1
        most = min(500, int(self._bundle_target / max(avg, 1e-4)))
        ready = len(self.ready) + 1             # with the task that opens the bundle
        free = self.nodes.free_slots()
        if free > 1 and not queued:
            return max(1, min(most, -(-ready // free)))
        own, others = self._backlogs(node, avg, time.time() if now is None else now)
        share = balanced_share(ready, others, own)
        return max(1, min(most, max(share, floor)))

    def _backlogs(self, node, avg: float, now: float) -> tuple[float, list[float]]:
        """(``node``'s backlog, every other slot's): the tasks each schedulable slot still has to run
        before it is free, estimated from the bundles of tiny tasks it runs (their tasks less those
        ``avg`` says ran since it started) and a bundle queued behind it. A slot running anything
        else counts as free (when it frees is not known). ``node``'s is its slot that frees first."""
        own, others = 0.0, []
        for each in self.nodes.nodes.values():
            if not each.schedulable:
                continue
            slots = []
            for key in each.running:
                entry = self.inflight.get(key)
                first = self._lookup(*entry[2][0][:2])[1] if entry is not None and entry[2] else None
                if first is None or first.dispatched is None or not self.tiny(first):
                    slots.append(0.0)
                else:
                    slots.append(max(0.0, len(entry[2]) - (now - first.dispatched) / max(avg, 1e-6)))
            slots += [0.0] * (each.slots - len(slots))
            slots.sort()
            if slots and each.queued is not None:
                slots[0] += len(self.queued_keys.get(each.queued, ()))
            if each is node and slots:
                own = slots.pop(0)
            others += slots
        return own, others

    def _bundle_floor(self, avg: float | None) -> int | None:
        """Tasks in an eighth of ``bundle_target`` at ``avg`` seconds each; None unless tiny."""
        if avg is None or avg * 4 > self._bundle_target:
            return None
        return max(1, int(self._bundle_target / 8 / max(avg, 1e-4)))

    def pace_of(self, job, tr) -> float | None:
        """How long an attempt of ``tr`` likely takes: its job's recent average, or, in a job with
        none yet, the pool's for tasks of its kind. A pool's no-op Python map says little of a
        ``/bin/true``, 30 times longer: a first job of commands after a map went in two bundles of
        500, one per node, its last 500 records recorded after all had run."""
        if job.pace is not None:
            return job.pace
        return self._pace["python" if tr.spec.python is not None else "command"]

    def paced(self, job, tr, took: float) -> None:
        """An attempt of ``tr`` took ``took`` seconds on its node."""
        kind = "python" if tr.spec.python is not None else "command"
        job.pace, self._pace[kind] = _moving(job.pace, took), _moving(self._pace[kind], took)

    def _carry_limit(self, job, tr) -> int:
        avg = self.pace_of(job, tr)
        if avg is None or avg * 4 > self._bundle_target:
            return 0
        return max(0, min(MAX_CARRIED, int(self._bundle_target / max(avg, 1e-4))))

    def carry(self, node, members: list, now: float) -> list:
        """The successors to send with ``members`` [(job, tr)]: [(job, tr, predecessor's tr)], each
        after its predecessor."""
        limit = self._carry_limit(*members[0])
        if limit <= 0:
            return []
        out: list = []
        frontier = [(job, tr) for job, tr in members if self.tiny(tr)]
        while frontier and len(out) < limit:
            nxt = []
            for job, pred in frontier:
                if dependency_action(pred.spec, True, 0, None) != ("satisfy", "none"):
                    continue
                for key in itertools.islice(job.graph.dependents.get(pred.key, ()), limit):
                    dtr = job.tasks.get(key)
                    if dtr is None or dtr.state != TaskState.PENDING or dtr.unmet != 1 or not self.tiny(dtr) \
                            or not self.engine.may_dispatch(job, dtr, now) \
                            or self.fallback_group(job, dtr) not in (None, node.group) \
                            or not self.preps.ready_on(job, node):
                        continue
                    out.append((job, dtr, pred))
                    nxt.append((job, dtr))
                    break       # one branch rides on; the others spread over the nodes from the driver
                if len(out) >= limit:
                    break
            frontier = nxt
        return out

    def carried_request(self, job, tr, pred, node, slots: float) -> AttemptRequest:
        """The request of ``tr``'s next attempt, made without starting it (it waits on ``pred``, or,
        with ``pred`` None, on a slot of ``node``: queued.py)."""
        spec, n = tr.spec, tr.n + 1
        deps = self._dep_results(job, spec) if spec.python else {}
        if pred is not None:
            deps.pop(pred.spec.id, None)    # the node puts the predecessor's fresh result there
        return AttemptRequest(
            job_id=job.spec.id, task_id=spec.id, attempt=n, pool_id=self.engine.name,
            command=spec.command, python=spec.python.payload if spec.python else None,
            env=spec.env, max_wall_clock=spec.max_wall_clock, node_root=self.engine.node_root,
            storage_options=self.engine.storage_options,
            result_url=f"{self.engine.results_url}/{job.spec.id}/{spec.id}/{n}.pkl",
            result_inline_max=self._inline_max, dep_results=deps,
            app_packages=self.app_packages(), node_group=node.group, job_prep=job.spec.prep is not None,
            container_runtime=self.engine.spec.container_runtime)

    def bundle_call(self, node, members: list, reqs: list, keys: list, slots: float, now: float):
        """(function, its arguments, the keys riding) of one Dask task for ``reqs``, with the
        successors that may run on after them."""
        chain = self.carry(node, members, now) if all(self.tiny(tr) for _, tr in members) else []
        if not chain:
            if len(reqs) == 1:
                return runner.run_attempt, (reqs[0],), keys
            return _bundle.run_bundle, (reqs,), keys
        carried = [(self.carried_request(job, tr, pred, node, slots), pred.spec.id) for job, tr, pred in chain]
        return _bundle.run_bundle, (reqs, carried), keys + [(job.key, tr.key, tr.n + 1) for job, tr, _ in chain]

    def start_carried(self, record, now: float) -> bool:
        """Start a carried task from its node's record, as its predecessor's success made it ready;
        False when it may no longer start (its job ended, it was cancelled): the record is dropped."""
        job, tr = self._lookup(record.job_id.lower(), record.task_id.lower())
        if tr is None or not self.dispatchable(job, tr) or tr.n + 1 != record.attempt:
            return False
        node = self.nodes.nodes.get(record.node_id or "")
        if node is None:
            return False        # its node was forgotten meanwhile: it runs again from the ready queue
        self.start_riding(job, tr, node, record.start, record.start, 1)
        return True

    def start_riding(self, job, tr, node, when: float, dispatched: float, slots: float) -> None:
        """Start the attempt ``tr`` rode to ``node`` in without being started (carried or queued)."""
        tr.n += 1
        tr.node = node.node_id
        tr.dispatched = dispatched
        self.set_state(job, tr, TaskState.RUNNING, when, attempts=tr.n, node=tr.node)
        self.batch.attempt(job.spec.id, tr.spec.id, tr.n, node=tr.node, state="running", dispatched=dispatched,
                           slots=slots)
        self.engine.task_started(job, tr, node, when)


def balanced_share(ready: int, others: list[float], own: float = 0.0) -> int:
    """How many of ``ready`` tasks a slot with ``own`` tasks still to run takes so that it ends about
    when the ``others`` (each slot's tasks still to run) end theirs, all tasks taking as long.

    >>> balanced_share(100, [0.0])          # two free slots: half each
    50
    >>> balanced_share(100, [80.0])         # the other has 80 to go: 90 here, 10 left for it
    90
    >>> balanced_share(10, [80.0])          # the other ends long after: all of them here
    10
    >>> balanced_share(100, [30.0], own=50.0)   # a bundle queued behind 50: 40, the other 60 after its 30
    40
    >>> balanced_share(3, [0.0], own=40.0)  # behind 40 while the other is free: one at least
    1
    """
    even = (ready + own + sum(others)) / (len(others) + 1)
    return max(1, min(ready, math.ceil(even - own)))


def _moving(average: float | None, took: float) -> float:
    return took if average is None else 0.9 * average + 0.1 * took
