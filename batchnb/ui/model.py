"""What the views show, folded from the engine's events: pure state, no widgets.

Each model starts from a snapshot read once from the ledger or the pool and
then changes only by :meth:`apply` of event lists, so it is tested without a
browser, a kernel or a cluster; the widgets in :mod:`batchnb.ui.views` copy
its :meth:`state` into their synced traits.

>>> from batchnb.engine.events import TasksAdded, TaskStateChanged
>>> m = JobModel("j", created=0.0)
>>> m.apply([TasksAdded("j", 2, 0.0, {"active": 2}),
...          TaskStateChanged("j", "a", "running", "active", 1.0, 1, "dedicated-0"),
...          TaskStateChanged("j", "a", "succeeded", "running", 2.0, 1, "dedicated-0", 0)])
>>> m.state(now=2.0)["counts"]
{'pending': 0, 'active': 1, 'running': 0, 'succeeded': 1, 'failed': 0, 'blocked': 0, 'cancelled': 0}
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterable

from ..extensions.alerts import AlertChanged
from ..engine.events import (CostSample, JobStateChanged, NodeStateChanged, PoolStalledChanged, PoolTargets, TasksAdded,
                             TaskStateChanged)
from .hours import node_hours, prep_lines  # noqa: F401  (node_hours: views and tests import it from here)
from ..states import (BILLED_NODE_STATES, FAILED_TASK_STATES, NODE_GROUPS, SCHEDULABLE_NODE_STATES,
                      TASK_STATE_ORDER, TERMINAL_TASK_STATES, NodeState, TaskState)

STATES = tuple(s.value for s in TaskState)
_IDLE, _RUNNING = NodeState.IDLE.value, NodeState.RUNNING.value
TERMINAL = tuple(s.value for s in TASK_STATE_ORDER if s in TERMINAL_TASK_STATES)
MAX_FAILURES = 50          # failures kept in full; the rest are counted
MAX_RUNNING_SHOWN = 8      # task ids listed per node; the rest are counted
WINDOW = 10.0              # seconds of completions the throughput is measured over
BILLED = frozenset(s.value for s in BILLED_NODE_STATES)
# A task in one of these has had its live or final attempt (a blocked task never ran; an active one waits).
_LAST_ATTEMPT_STATES = frozenset({TaskState.RUNNING}) | (TERMINAL_TASK_STATES - {TaskState.BLOCKED})


def retries_of(state: str, attempts: int, requeues: int) -> int:
    """Attempts of one task that ended in a retry, from its ledger row.

    Every attempt was either requeued, retried, or is the task's live or final
    one; a task waiting in ``active`` has no live attempt.
    """
    live = 1 if attempts and state in _LAST_ATTEMPT_STATES else 0
    return max(0, attempts - requeues - live)


class JobModel:
    """A job's counts, rate, retries, requeues and failures, from events.

    ``stderr_tail(task_id)`` fetches the tail of a failed task's stderr (a
    ledger read, once per failure shown).
    """

    def __init__(self, job_id: str, created: float, counts: dict | None = None, *, retries: int = 0,
                 requeues: int = 0, failures: Iterable[dict] = (), state: str = "active",
                 reason: str | None = None, ended: float | None = None, last_end: float | None = None,
                 first_start: float | None = None,
                 stderr_tail: Callable[[str], str] | None = None):
        self.job_id = job_id
        self.created = created
        self.counts = {s: 0 for s in STATES}
        self.counts.update({k: v for k, v in (counts or {}).items() if k in self.counts})
        self.retries = retries
        self.requeues = requeues
        self.job_state = state
        self.reason = reason
        self.ended = ended
        self.last_end = last_end               # when its last task ended: the clock of a job whose tasks all ended
        self.first_start = first_start         # when its first attempt started: where its clock begins
        self._tail = stderr_tail
        self.failures: dict[str, dict] = {}
        self.failures_total = 0
        #: why the job cannot make progress now (its pool has no node that can run it), or ""
        self.problem = ""
        for f in failures:
            self._fail(dict(f))
        self._ends: deque = deque()            # times tasks ended, inside WINDOW
        self._prep_reader: Callable[[], list] | None = None   # the job's prep/release runs, from its ledger
        self._prep: tuple = (-1.0, [])         # (when read, lines): they are ledger rows, not events
        # The job's counts as its ledger keeps them, read after each batch of events: a task that
        # ended between the model's first read and its subscription would otherwise be missed for good.
        self._counts_reader: Callable[[], dict] | None = None

    @classmethod
    def from_job(cls, job) -> "JobModel":
        """The model of ``job`` now, from its ledger."""
        import json
        from ..engine.counters import job_stats
        row = job.ledger.job(job.id)
        # Counters and aggregates, not a pass over the tasks: a million-task job's view costs
        # what a 100-task one does.
        counts = job.counts()
        stats = job_stats(job.ledger, job.id)
        failures = []
        for r in job.ledger.tasks(job.id, ("id", "state", "exit_code", "node", "failure"),
                                  states=FAILED_TASK_STATES)[:MAX_FAILURES]:
            why = json.loads(r["failure"]) if r["failure"] else {}
            failures.append({"task_id": r["id"], "state": r["state"], "exit_code": r["exit_code"], "node": r["node"],
                             "category": why.get("category"), "message": why.get("message")})
        model = cls(job.id, row["created"], counts, retries=stats.retries, requeues=stats.requeues,
                    failures=failures, state=row["state"], reason=row["reason"], ended=row["ended"],
                    last_end=job.ledger.last_task_end(job.id), first_start=stats.first_start,
                    stderr_tail=lambda tid: _stderr_tail(job, tid))
        model.failures_total = sum(counts.get(s.value, 0) for s in FAILED_TASK_STATES)
        model._counts_reader = job.counts
        if row.get("spec") and ('"prep"' in row["spec"] or '"release"' in row["spec"]):
            model._prep_reader = lambda: prep_lines(job.prep_runs(), job.release_runs())
        return model

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in TERMINAL)

    def apply(self, events: Iterable) -> None:
        for ev in events:
            if getattr(ev, "job_id", None) not in (self.job_id, None):
                continue
            if isinstance(ev, TaskStateChanged):
                self._task(ev)
            elif isinstance(ev, TasksAdded):
                for s, n in (ev.states or {"pending": ev.count}).items():
                    self.counts[s] = self.counts.get(s, 0) + n
                if self.job_state == "completed" and self.reason is None:
                    self.job_state = "active"
            elif isinstance(ev, JobStateChanged):
                self.job_state, self.reason = ev.state, ev.reason or self.reason
                if ev.state == "completed":
                    self.ended = ev.time
            elif isinstance(ev, PoolStalledChanged):
                self.problem = ev.reason
        if self._counts_reader is not None:
            try:
                read = self._counts_reader()
            except Exception:  # noqa: BLE001 - its pool closed: the events' arithmetic stands
                return
            self.counts = {s: read.get(s, 0) for s in STATES}
            self.failures_total = sum(read.get(s.value, 0) for s in FAILED_TASK_STATES)

    def _task(self, ev: TaskStateChanged) -> None:
        if ev.state == "running" and (self.first_start is None or ev.time < self.first_start):
            self.first_start = ev.time
        if ev.state in TERMINAL and ev.previous not in TERMINAL:
            self._ends.append(ev.time)
            self.last_end = max(self.last_end or ev.time, ev.time)
        if ev.previous in self.counts and self.counts[ev.previous] > 0:
            self.counts[ev.previous] -= 1
        self.counts[ev.state] = self.counts.get(ev.state, 0) + 1
        if ev.previous == "running" and ev.state == "active":
            # The dispatcher's reasons: "retry after ..." or "requeued: ...".
            if (ev.reason or "").startswith("requeued"):
                self.requeues += 1
            else:
                self.retries += 1
        if ev.state in FAILED_TASK_STATES:
            self._fail({"task_id": ev.task_id, "state": ev.state, "exit_code": ev.exit_code, "node": ev.node_id,
                        "message": ev.reason, "attempt": ev.attempt})
        elif ev.task_id in self.failures:      # replaced or re-run: no longer a failure
            del self.failures[ev.task_id]
            self.failures_total -= 1

    def _fail(self, f: dict) -> None:
        if f["task_id"] not in self.failures:
            self.failures_total += 1
        if len(self.failures) < MAX_FAILURES or f["task_id"] in self.failures:
            if f.get("state") == "failed" and self._tail is not None and "stderr" not in f:
                f["stderr"] = _last_lines(self._tail(f["task_id"]))
            self.failures[f["task_id"]] = f

    def throughput(self, now: float) -> float:
        """Tasks ended per second over the last WINDOW seconds (or since the job began, if later)."""
        while self._ends and self._ends[0] < now - WINDOW:
            self._ends.popleft()
        span = now - max(self.created, now - WINDOW)
        return len(self._ends) / span if span > 0 else 0.0

    def state(self, now: float | None = None) -> dict:
        """Everything the JobView syncs, as plain JSON-able values."""
        now = time.time() if now is None else now
        live = self.total - self.done
        # The job's own state word (JobState); that no task is left to run is a fact beside it:
        # a "noaction" job stays active after its tasks ended, as in Azure.
        tasks_complete = live == 0
        finished = self.ended is not None and self.job_state == "completed"
        # From its first start to its last end, as job.stats().wall_clock: once no task is left the
        # clock stands still (a job completed later, or a view drawn later, must not stretch it).
        end = (self.last_end or self.ended or now) if (finished or tasks_complete) else now
        elapsed = max(0.0, end - (self.first_start if self.first_start is not None else self.created))
        # Once the tasks ended the rate is the whole run's; while they run, the recent one's.
        rate = (self.done / elapsed if elapsed > 0 else 0.0) if (finished or tasks_complete) else self.throughput(now)
        if self._prep_reader is not None and time.monotonic() - self._prep[0] >= 1.0:
            try:
                self._prep = (time.monotonic(), self._prep_reader())
            except Exception:  # a closing pool: keep the last lines
                self._prep = (time.monotonic(), self._prep[1])
        prep = self._prep[1]
        if prep and all(p["prep"] == "failed" for p in prep) and live and not self.problem:
            self.problem = f"its preparation task failed on every node ({len(prep)}): no task can run"
        return {"prep": prep, "job_id": self.job_id, "counts": dict(self.counts), "total": self.total, "done": self.done,
                "job_state": self.job_state, "tasks_complete": tasks_complete,
                "reason": self.reason or "", "elapsed": elapsed,
                "throughput": round(rate, 3),
                # A stalled job has no honest ETA: nothing will end until a node can run it.
                "eta": (live / rate) if (rate > 0 and live and not self.problem) else None,
                "problem": self.problem if live else "",
                "retries": self.retries, "requeues": self.requeues,
                "failures": list(self.failures.values()), "failures_total": self.failures_total}


def _last_lines(text: str, lines: int = 20, chars: int = 2000) -> str:
    return "\n".join((text or "").rstrip("\n").splitlines()[-lines:])[-chars:]


def _stderr_tail(job, task_id: str) -> str:
    try:
        return job.task(task_id).stderr()
    except Exception:  # a view must not fail on a log it cannot read
        return ""


class PoolModel:
    """A pool's nodes (state, group, running tasks, CPU, memory) and its targets, from events."""

    def __init__(self, name: str, nodes: Iterable = (), *, dedicated: int = 0, spot: int = 0,
                 autoscale: str | None = None):
        self.name = name
        self.nodes: dict[str, dict] = {}
        self.where: dict[tuple, str] = {}          # (job, task) -> node it runs on
        self.gone: dict[str, dict] = {}            # nodes removed from the pool, as they last were
        self.targets = {"dedicated": int(dedicated or 0), "spot": int(spot or 0)}
        self.target_reason = ""
        self.autoscale = autoscale or ""
        self.alerts: dict[str, dict] = {}          # alert name -> its last change (pool.alert)
        self.dashboard = ""          # the Dask dashboard's URL, when the scheduler serves one
        self.update_nodes(nodes)

    @classmethod
    def from_pool(cls, pool) -> "PoolModel":
        spec = pool.spec
        formula = spec.autoscale if isinstance(spec.autoscale, str) else (
            "python callable" if spec.autoscale is not None else None)
        targets = requested_targets(pool)
        if targets is None:
            targets = {"dedicated": spec.dedicated or 0, "spot": spec.spot or 0}
        model = cls(pool.name, pool.nodes(), dedicated=targets["dedicated"], spot=targets["spot"], autoscale=formula)
        try:
            model.dashboard = pool.client.dashboard_link or ""
        except Exception:  # no client, or a scheduler without a dashboard: no link
            model.dashboard = ""
        return model

    def update_nodes(self, infos: Iterable) -> None:
        """Take state, slots, running tasks, CPU and memory from ``pool.nodes()``.

        ``infos`` is every node of the pool: one it does not list was removed
        (scaled down, or replaced) and leaves the view.
        """
        infos = list(infos)
        listed = {n.id for n in infos}
        for node_id in [k for k in self.nodes if k not in listed]:
            # Kept for the pool's final snapshot (batchnb.ui.final): the nodes it had, as they ended.
            self.gone[node_id] = dict(self.nodes.pop(node_id), running=set(), used=0)
            for key in [k for k, v in self.where.items() if v == node_id]:
                del self.where[key]
        for n in infos:
            node = self._node(n.id, n.group)
            node.update(state=n.state, slots=n.slots, used=n.used_slots, cpu=n.cpu, memory=n.memory)
            known = {k: v for k, v in self.where.items() if v == n.id}
            for key in known:
                # A task the event stream put here leaves by the event that ends it: a reading
                # (every 2 s) may predate it and must not show its node idle meanwhile.
                if key[0] is None and key[1] not in n.running:
                    del self.where[key]
            have = {k[1] for k in self.where if self.where[k] == n.id}
            for tid in n.running:
                if tid not in have:
                    self.where[(None, tid)] = n.id
            node["running"] = {k[1] for k, v in self.where.items() if v == n.id}

    def _node(self, node_id: str, group: str) -> dict:
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = {"id": node_id, "group": group, "state": "starting", "running": set(),
                                          "slots": 1, "used": 0, "cpu": None, "memory": None, "reason": ""}
        return node

    def apply(self, events: Iterable) -> None:
        for ev in events:
            if isinstance(ev, NodeStateChanged) and ev.pool == self.name:
                node = self._node(ev.node_id, ev.group)
                node["state"], node["reason"] = ev.state, ev.reason or ""
                if ev.state not in SCHEDULABLE_NODE_STATES:
                    for key in [k for k, v in self.where.items() if v == ev.node_id]:
                        del self.where[key]
                    node["running"], node["used"] = set(), 0
            elif isinstance(ev, PoolTargets) and ev.pool == self.name:
                self.targets = {"dedicated": ev.dedicated, "spot": ev.spot}
                self.target_reason = ev.reason or ""
            elif isinstance(ev, TaskStateChanged):
                self._task(ev)
            elif isinstance(ev, AlertChanged) and ev.pool == self.name:
                self.alerts[ev.alert] = {"alert": ev.alert, "state": ev.state, "time": ev.time, "detail": ev.detail}

    def _task(self, ev: TaskStateChanged) -> None:
        key = (ev.job_id, ev.task_id)
        if ev.state == "running" and ev.node_id:
            self.where[key] = ev.node_id
            node = self.nodes.get(ev.node_id)
            if node is not None:
                node["running"].add(ev.task_id)
                node["used"] = len(node["running"])
        elif ev.previous == "running":
            node_id = self.where.pop(key, None) or self.where.pop((None, ev.task_id), None)
            node = self.nodes.get(node_id or "")
            if node is not None and ev.task_id in node["running"]:
                node["running"].discard(ev.task_id)
                node["used"] = len(node["running"])

    def current(self) -> dict:
        """Nodes per group that count toward the pool's size (billed states)."""
        out = dict.fromkeys(NODE_GROUPS, 0)
        for n in self.nodes.values():
            if n["state"] in BILLED:
                out[n["group"]] = out.get(n["group"], 0) + 1
        return out

    def state(self) -> dict:
        nodes = []
        for n in sorted(self.nodes.values(), key=lambda n: (n["group"], _natural(n["id"]))):
            shown = dict(n)
            shown["more"] = max(0, len(n["running"]) - MAX_RUNNING_SHOWN)
            # State and slots agree with the tasks shown (many tiny tasks may share one slot).
            busy = len(n["running"])
            if n["state"] in (_IDLE, _RUNNING):
                shown["state"] = _RUNNING if busy else _IDLE
            shown["used"] = min(n["slots"], max(busy, n["used"])) if busy else 0
            shown["running"] = sorted(n["running"], key=_natural)[:MAX_RUNNING_SHOWN]
            nodes.append(shown)
        return {"pool": self.name, "nodes": nodes, "targets": dict(self.targets), "current": self.current(),
                "autoscale": self.autoscale, "target_reason": self.target_reason, "dashboard": self.dashboard,
                "alerts": [a for _, a in sorted(self.alerts.items()) if a["state"] == "firing"]}


def requested_targets(pool) -> dict | None:
    """The nodes per group the pool's backend was asked for, or None when it cannot scale.

    This, not ``pool.spec``, is the target: a default pool's spec says no count
    (the local backend starts one node per core), and a resize or an autoscale
    evaluation changes the backend's request but never the spec.
    """
    backend = getattr(pool, "_backend", None)
    if backend is None or not getattr(backend, "can_scale", False):
        return None
    out = dict.fromkeys(NODE_GROUPS, 0)
    for group in backend.requested().values():
        out[group] = out.get(group, 0) + 1
    return out


def _natural(node_id: str):
    head, _, tail = node_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (node_id, 0)


class CostModel:
    """Spend and rate per node group, and the budget; node-hours when the pool has no cost meter.

    ``cost`` is a :class:`batchnb.Cost` (or None); ``hours`` what :func:`node_hours` returns.
    """

    def __init__(self, scope: str, *, job_id: str | None = None, budget: float | None = None,
                 currency: str = "USD"):
        self.scope = scope
        self.job_id = job_id
        self.budget = budget
        self.currency = currency
        self.groups: dict[str, dict] = {}
        self.total: float | None = None
        self.rate: float | None = None
        self.as_of = 0.0
        self.hours: dict = {"node_hours": {}, "nodes_up": {}}
        self._prev: tuple | None = None
        #: the pool closed: the figures are the ledger's final ones and no longer move
        self.final = False

    def apply(self, events: Iterable) -> None:
        """Cost samples move the total and rate between full readings."""
        for ev in events:
            if isinstance(ev, CostSample) and ev.job_id == self.job_id and not self.final:   # the pool's have no job
                self.total, self.rate, self.currency = ev.total, ev.rate_per_hour, ev.currency
                self.as_of = max(self.as_of, ev.time)

    def update(self, cost=None, hours: dict | None = None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if hours is not None:
            self.hours = hours
        if cost is not None:
            self.total, self.rate, self.currency = cost.total, cost.rate_per_hour, cost.currency
            groups = {}
            # Cost gives only the total rate: split it by the groups' share of the spend since the
            # last reading (else of all of it), so the rows' rates add up to the header's and the
            # rows, moved on at them, keep adding up to the header's total.
            grew = {g: max(0.0, v - (self._prev[1].get(g, 0.0) if self._prev else 0.0)) for g, v in cost.by_group.items()}
            if not sum(grew.values()):
                grew = {g: max(0.0, v) for g, v in cost.by_group.items()}
            for g, spent in cost.by_group.items():
                share = grew[g] / sum(grew.values()) if sum(grew.values()) else 0.0
                groups[g] = {"spent": spent, "rate": (cost.rate_per_hour or 0.0) * share,
                             "node_hours": cost.node_seconds.get(g, 0.0) / 3600}
            self._prev = (now, dict(cost.by_group))
            self.groups = groups
        self.as_of = now

    def close(self, cost=None, hours: dict | None = None, now: float | None = None) -> None:
        """The pool closed: take its final figures (from its ledger) and stop the rates."""
        self.update(cost, hours, now)
        self.final = True
        self.rate = 0.0 if self.rate is not None else None
        self.hours = {"node_hours": self.hours.get("node_hours", {}), "nodes_up": {}}
        for v in self.groups.values():
            v["rate"] = 0.0

    def state(self) -> dict:
        metered = self.total is not None
        groups = self.groups if metered else {
            g: {"spent": None, "rate": None, "node_hours": h,
                "nodes_up": self.hours.get("nodes_up", {}).get(g, 0)}
            for g, h in self.hours.get("node_hours", {}).items()}
        for g, v in groups.items():
            v["nodes_up"] = self.hours.get("nodes_up", {}).get(g, 0)
        return {"scope": self.scope, "metered": metered, "currency": self.currency,
                "total": self.total, "rate": self.rate, "budget": self.budget, "groups": groups,
                "as_of": self.as_of, "final": self.final}
