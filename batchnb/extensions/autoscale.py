"""Autoscale, bound to a live pool: samples its metrics and applies the policy's targets.

The decision is :mod:`batchnb.autoscale`'s (pure); this extension does the
I/O around it, on the dispatcher's thread (``dispatcher.at`` timers), so it
reads the node table and the task counts without locks:

- every ``batchnb.autoscale-sample`` it records the metrics under Azure's
  ``$`` names — ``$ActiveTasks``, ``$RunningTasks``, ``$PendingTasks``
  (active + running, as Azure), ``$SucceededTasks``, ``$FailedTasks``,
  ``$CPUPercent`` and ``$MemoryBytes`` (means over the nodes that are up),
  ``$SampleNodeCount``, ``$UsableNodeCount``, ``$PreemptedNodeCount`` — and
  the same per node group under ``dedicated.*`` / ``spot.*`` for callables;
- every ``autoscale_interval`` it asks the policy for targets, clamps them to
  ``batchnb.autoscale-max-nodes`` and resizes each group. A formula that fails
  to evaluate keeps the pool as it is (Azure's rule) and is reported as a
  ``PoolTargets`` event with the error and a log warning.

Nodes leave by ``$NodeDeallocationOption``: ``requeue`` (running tasks go
back to the queue, the node goes now), ``terminate`` (running tasks fail
with category ``terminated``), ``taskcompletion`` and ``retaineddata`` (the
node is drained — no new tasks — and removed once idle). Idle nodes go first.

An autoscaling pool starts with no nodes (no ``dedicated=``) and grows with its tasks;
``pool.evaluate_autoscale`` tries a formula on its live samples and applies nothing:

>>> import batchnb as bnb
>>> pool = bnb.Pool("doc", autoscale="$TargetDedicatedNodes = min(4, $PendingTasks.GetSample(1))",
...                 autoscale_interval="10s")
>>> pool.nodes()
[]
>>> pool.evaluate_autoscale("$TargetDedicatedNodes = max(1, $ActiveTasks.GetSample(1) / 2)")
{'$TargetDedicatedNodes': 1.0, '$TargetLowPriorityNodes': 0.0, '$NodeDeallocationOption': 'requeue'}
>>> pool.close()
"""

from __future__ import annotations

import collections
import json
import logging
import time
from datetime import datetime, timedelta, timezone

from .. import _config
from ..node import runner
from ..engine.extension import PoolExtension
from ..autoscale import FormulaPolicy, MetricHistory, Targets, make_policy
from ..engine.events import PoolTargets
from ..formula import Formula
from ..states import NODE_GROUPS, JobState, NodeState, TaskState

log = logging.getLogger("batchnb.autoscale")

GROUPS = NODE_GROUPS
_UP = (NodeState.IDLE, NodeState.RUNNING)
# Which nodes go first when a group shrinks: those doing nothing useful.
_REMOVAL_ORDER = {NodeState.START_TASK_FAILED: 0, NodeState.UNUSABLE: 0, NodeState.OFFLINE: 0,
                  NodeState.PREEMPTED: 1, NodeState.STARTING: 2, NodeState.IDLE: 3, NodeState.LEAVING: 4,
                  NodeState.RUNNING: 5}


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


class AutoscaleExtension(PoolExtension):
    """Samples the pool's metrics always; applies targets when the pool has ``autoscale=``.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=0) as pool:
    ...     ext = pool.extension(AutoscaleExtension)
    ...     print(ext.history.latest("$PendingTasks"), ext.current())
    0.0 {'$CurrentDedicatedNodes': 0, '$CurrentLowPriorityNodes': 0, '$TaskSlotsPerNode': 1}
    """

    def __init__(self, engine):
        super().__init__(engine)
        self.sample_every = _config.seconds("autoscale-sample")
        self.sample_period = timedelta(seconds=self.sample_every)
        self.history = MetricHistory(retention=timedelta(seconds=_config.seconds("autoscale-retention")))
        self.max_nodes = int(_config.get("autoscale-max-nodes"))
        spec = engine.spec.autoscale
        self.policy = None if spec is None else make_policy(spec, sample_period=self.sample_period)
        self.interval = float(engine.spec.autoscale_interval)
        self.last_targets: Targets | None = None
        self.last_error: str | None = None
        #: (time, dedicated, spot, deallocation or error) of the latest evaluations
        self.log: collections.deque = collections.deque(maxlen=200)
        self.draining: set[str] = set()
        self._next_eval = 0.0
        self._stopped = False

    # -- timers on the dispatcher's thread ----------------------------------------
    def start(self) -> None:
        self.engine.dispatcher.call(self._tick)

    def stop(self) -> None:
        self._stopped = True

    def _tick(self) -> None:
        if self._stopped or self.engine.closed:
            return
        now = time.time()
        try:
            self.sample(now)
            self._drain(now)
            if self.policy is not None and now >= self._next_eval:
                self._next_eval = now + self.interval
                self.apply(now)
        except Exception:  # noqa: BLE001 - never let autoscale break the dispatcher's turn
            log.exception("pool %s: autoscale failed; it tries again at the next sample", self.engine.name)
        finally:
            self.engine.dispatcher.at(now + self.sample_every, self._tick)

    # -- sampling --------------------------------------------------------------
    def current(self) -> dict:
        """``$CurrentDedicatedNodes``, ``$CurrentLowPriorityNodes`` and ``$TaskSlotsPerNode`` now."""
        counts = {g: 0 for g in GROUPS}
        for node_id, group in self.engine.backend.requested().items():
            if node_id not in self.draining:
                counts[group] = counts.get(group, 0) + 1
        return {"$CurrentDedicatedNodes": counts["dedicated"], "$CurrentLowPriorityNodes": counts["spot"],
                "$TaskSlotsPerNode": self.engine.spec.task_slots_per_node}

    def sample(self, now: float) -> dict:
        """Record one sample of every metric (dispatcher thread); return it."""
        disp = self.engine.dispatcher
        tasks = collections.Counter()
        for job in disp.jobs.values():
            tasks.update({s: n for s, n in job.counts.items() if job.state == JobState.ACTIVE
                          or s in (TaskState.SUCCEEDED, TaskState.FAILED)})
        values = {"$ActiveTasks": tasks[TaskState.ACTIVE], "$RunningTasks": tasks[TaskState.RUNNING],
                  "$PendingTasks": tasks[TaskState.ACTIVE] + tasks[TaskState.RUNNING],
                  "$SucceededTasks": tasks[TaskState.SUCCEEDED], "$FailedTasks": tasks[TaskState.FAILED]}
        nodes = list(disp.nodes.nodes.values())
        for prefix, members in (("", nodes), *((f"{g}.", [n for n in nodes if n.group == g]) for g in GROUPS)):
            up = [n for n in members if n.state in _UP and n.address is not None]
            cpus = [n.cpu for n in up if n.cpu is not None]
            mems = [n.memory for n in up if n.memory is not None]
            part = {"$CPUPercent": sum(cpus) / len(cpus) if cpus else 0.0,
                    "$MemoryBytes": sum(mems) / len(mems) if mems else 0.0,
                    "$SampleNodeCount": len(up), "$UsableNodeCount": len(up),
                    "$PreemptedNodeCount": sum(n.state == NodeState.PREEMPTED for n in members)}
            if prefix:
                part = {prefix + k.lstrip("$"): v for k, v in part.items()}
                part[prefix + "Nodes"] = len(members)
            values.update(part)
        current = self.current()
        values.update(current)
        self.history.record(_utc(now), values)
        return values

    # -- deciding and applying -------------------------------------------------------
    def evaluate(self, policy=None, now: float | None = None) -> dict:
        """Evaluate ``policy`` (a formula, a callable, or the pool's own) against a fresh sample; apply nothing."""
        disp = self.engine.dispatcher
        now = time.time() if now is None else now
        disp.call(self.sample, now)
        if policy is None:
            if self.policy is None:
                from ..errors import SpecError
                raise SpecError("formula", None, "the pool has no autoscale policy; pass a formula to evaluate")
            policy = self.policy
        elif isinstance(policy, (str, Formula)) or callable(policy):
            policy = make_policy(policy, sample_period=self.sample_period)
        current = disp.call(self.current)
        if isinstance(policy, FormulaPolicy):
            samples = self.history.samples(n for n in policy.formula.system_variables)
            return policy.formula.evaluate(samples, _utc(now), current, sample_period=self.sample_period)
        targets = policy.decide(self.history, _utc(now), current)
        return {"$TargetDedicatedNodes": float(targets.dedicated), "$TargetLowPriorityNodes": float(targets.spot),
                "$NodeDeallocationOption": targets.deallocation}

    def apply(self, now: float) -> Targets | None:
        """Decide and resize (dispatcher thread). A failing policy keeps the pool as it is."""
        disp = self.engine.dispatcher
        try:
            targets = self.policy.decide(self.history, _utc(now), self.current())
        except Exception as exc:  # noqa: BLE001 - Azure keeps the pool's size when evaluation fails
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.log.append((now, None, None, self.last_error))
            log.warning("pool %s: autoscale evaluation failed, keeping the current size: %s", self.engine.name,
                        self.last_error)
            cur = self.current()
            disp.events.append(PoolTargets(self.engine.name, now, cur["$CurrentDedicatedNodes"],
                                           cur["$CurrentLowPriorityNodes"], f"autoscale failed: {self.last_error}"))
            return None
        self.last_error = None
        wanted = {"dedicated": min(targets.dedicated, self.max_nodes), "spot": min(targets.spot, self.max_nodes)}
        for group in GROUPS:
            self.resize(group, wanted[group], targets.deallocation, now)
        self.last_targets = Targets(wanted["dedicated"], wanted["spot"], targets.deallocation)
        self.log.append((now, wanted["dedicated"], wanted["spot"], targets.deallocation))
        if len(self.log) < 2 or self.log[-2][1:3] != (wanted["dedicated"], wanted["spot"]):
            disp.events.append(PoolTargets(self.engine.name, now, wanted["dedicated"], wanted["spot"], "autoscale"))
        return self.last_targets

    def resize(self, group: str, target: int, deallocation: str, now: float) -> None:
        """Make ``group`` have ``target`` nodes that are not leaving (dispatcher thread)."""
        backend, table = self.engine.backend, self.engine.dispatcher.nodes.nodes
        members = [n for n, g in backend.requested().items() if g == group]
        staying = [n for n in members if n not in self.draining]
        if target > len(staying):
            for node_id in [n for n in members if n in self.draining][:target - len(staying)]:
                self.draining.discard(node_id)      # a drained node is the cheapest new node
                if node_id in table:
                    table[node_id].draining = False
                staying.append(node_id)
            if target > len(staying):
                backend.scale(group, target + len(members) - len(staying))
            return
        if target == len(staying):
            return

        def order(node_id):
            node = table.get(node_id)
            if node is None:
                return (-1, 0, 0)
            return (_REMOVAL_ORDER.get(node.state, 5), node.used, -node.since)
        for node_id in sorted(staying, key=order)[:len(staying) - target]:
            self.remove_node(node_id, deallocation, now)

    def remove_node(self, node_id: str, deallocation: str, now: float) -> None:
        """Take one node out of the pool the way ``deallocation`` says (dispatcher thread)."""
        disp = self.engine.dispatcher
        node = disp.nodes.nodes.get(node_id)
        reason = f"removed by autoscale ({deallocation})"
        if node is not None and node.running and deallocation in ("taskcompletion", "retaineddata"):
            node.draining = True
            self.draining.add(node_id)
            return
        if node is not None and node.running:
            if deallocation == "terminate":
                terminate_node_tasks(disp, node_id, f"terminated: node {node_id} {reason}", now)
            else:
                disp.requeue_node(node_id, f"node {node_id} {reason}", now)
        self._release(node_id, reason)

    def _release(self, node_id: str, reason: str) -> None:
        disp = self.engine.dispatcher
        self.draining.discard(node_id)
        self.engine.backend.remove([node_id])
        node = disp.nodes.nodes.get(node_id)
        if node is None:
            return
        # A node with a worker leaves the table when its worker is gone (NodeHealthExtension);
        # one without a worker (starting, preempted) is gone now.
        disp.set_node_state(node_id, NodeState.LEAVING if node.address else NodeState.OFFLINE, reason)

    def _drain(self, now: float) -> None:
        table = self.engine.dispatcher.nodes.nodes
        for node_id in list(self.draining):
            node = table.get(node_id)
            if node is None or not node.running:
                self._release(node_id, "removed by autoscale (taskcompletion) after its tasks completed")


def terminate_node_tasks(disp, node_id: str, message: str, now: float) -> int:
    """Fail the attempts running on ``node_id`` with category ``terminated`` (the ``terminate`` option)."""
    n_failed = 0
    for key, (fut, nid, members, slots) in list(disp.inflight.items()):
        if nid != node_id:
            continue
        del disp.inflight[key]
        disp.release([fut])
        disp.nodes.give_back(node_id, key, slots, now)
        for job_key, task_key, n in members:
            job, tr = disp._lookup(job_key, task_key)
            if disp.queued_back(job, tr, n) or tr is None or tr.n != n or tr.state != TaskState.RUNNING:
                continue        # not running there: queued behind its slots, it goes back to the queue
            disp.engine.task_ended(job, tr, now)
            disp.batch.attempt(job.spec.id, tr.spec.id, n, state="failed", end=now, category=runner.TERMINATED,
                               message=message)
            tr.failure = message
            disp.set_state(job, tr, TaskState.FAILED, now, reason=message,
                           failure=json.dumps({"category": runner.TERMINATED, "message": message, "node": node_id}))
            disp.resolve(job, tr, False, None, runner.TERMINATED, now)
            n_failed += 1
    return n_failed

