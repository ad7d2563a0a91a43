"""The pool's cost meter, as a pool extension: billing, budgets, forecasts, samples.

It feeds a :class:`~batchnb.cost.CostMeter` from the dispatcher's hooks:
a node bills from its first billed state (``starting`` when the backend
asked for it) to ``preempted``/``offline`` or the pool's close; an attempt
holds its slots from dispatch to its end (tiny tasks bundled into one Dask
task share one slot). Budgets: a job whose spend plus the projected cost of
its running attempts and of the next task would pass ``budget`` dispatches
no more; its running attempts may finish, and the job ends with reason
``budget`` when they have, or at once (running attempts killed) when its
actual spend reaches the budget. What the meter priced with is recorded in
the ledger (an ``events`` row of kind ``pool``, state ``priced``), so that
:func:`batchnb.cost.cost_from_ledger` can rebuild any cost later.

A job that reaches its budget, at a price of 1 USD a node-second so that it does at once:

>>> import batchnb as bnb
>>> prices = {"Standard_D4s_v5": {"dedicated": 3600.0, "spot": 720.0}}
>>> with bnb.Pool("doc", dedicated=1, vm_size="Standard_D4s_v5", price_table=prices, tags={"team": "vision"}) as pool:
...     job = pool.job("sweep", budget=1.0)
...     t = job.add_task("long", "sleep 30")
...     print(job.wait(quiet=True).reason, t.state, job.cost().total >= 1.0, job.forecast().remaining_seconds)
...     print(list(job.cost().frame().columns))
budget cancelled True 0.0
['job_id', 'task_id', 'attempts', 'seconds', 'slot_seconds', 'node_seconds', 'dedicated', 'spot', 'cost', 'team']
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from .. import _config
from ..cost.value import merge
from . import billing
from ..engine.extension import PoolExtension
from ..spec.validate import duration
from ..cost.meter import BudgetGuard, Cost, CostMeter, Forecast, forecast
from ..errors import SpecError
from ..engine.events import CostSample, JobStateChanged, NodeStateChanged
from ..engine.ledger import Batch
from ..states import BILLED_NODE_STATES, NODE_GROUPS, JobState, NodeState, TaskState

log = logging.getLogger("batchnb.cost")

RELEASED_NODE_STATES = frozenset({NodeState.PREEMPTED, NodeState.OFFLINE})


def _hook(fn):
    """A hook runs on the dispatcher's thread: a cost bug must never stop dispatching."""
    @functools.wraps(fn)
    def safe(self, *args):
        try:
            return fn(self, *args)
        except Exception:  # noqa: BLE001 - logged; the engine goes on
            log.exception("batchnb cost meter: %s failed", fn.__name__)
            return True if fn.__name__ in ("may_dispatch", "node_joined") else None
    return safe


class CostExtension(PoolExtension):
    """Owns the pool's :class:`CostMeter`; ``pool.cost()``, ``job.cost()`` and budgets use it.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=0, vm_size="Standard_D4s_v5") as pool:
    ...     meter = pool.extension(CostExtension).meter
    ...     print(meter.hourly_price("dedicated"), meter.hourly_price("spot"), meter.currency, pool.cost().total)
    0.192 0.0384 USD 0.0
    """

    def __init__(self, engine):
        super().__init__(engine)
        spec = engine.spec
        table = engine.price_table    # None: no vm_size, or a cloud size without a price (metered at 0)
        self.meter = CostMeter(table, spec.vm_size if table is not None else None, spec.region, tags=spec.tags)
        now, backend = time.time(), engine.backend
        # The pool's record starts with its first bill: its scheduler VM's or its first node's request.
        self.created = min([now, getattr(backend, "started_at", None) or now,
                            *(billing.billed_since(backend, n, now, None) for n in backend.requested())])
        self._scheduler = billing.bill_scheduler(self.meter, engine, self.created)
        self._released: dict[str, float] = {}   # node id -> when its last bill ended
        self._lock = threading.Lock()      # guards _pending
        self._pending: list = []            # attempts of the Dask submission being built
        self._billed: dict[str, str] = {}   # node id -> group, billed now
        self._starts: dict[tuple, float] = {}
        self._done: dict[str, list] = {}    # job key -> [seconds of ended attempts, count]
        self._seen_jobs: set[str] = set()
        self._prior: dict[str, Cost | None] = {}
        self._stopping: set[str] = set()
        self._memo: dict[str, list] = {}    # job key -> [turn's now, spent, committed] (may_dispatch)
        self._no_price: set[str] = set()
        self._sample_every = duration(_config.get("cost-sample"), "batchnb.cost-sample", allow_none=False)
        self._check_every = duration(_config.get("budget-check"), "batchnb.budget-check", allow_none=False)
        self._next_sample = 0.0
        self._stopped = False
        self._record_prices()

    # -- what the meter priced with, for cost_from_ledger ------------------------------
    def _record_prices(self) -> None:
        spec, meter = self.engine.spec, self.meter
        prices = {}
        for group in NODE_GROUPS:
            try:
                prices[group] = meter.hourly_price(group)
            except SpecError:
                prices[group] = None    # no spot price for this size: such nodes are billed at 0
        table = meter.prices
        data = {"pool": self.engine.name, "backend": spec.backend, "vm_size": spec.vm_size, "region": spec.region,
                "slots": spec.task_slots_per_node, "prices": prices, "currency": meter.currency,
                "price_date": getattr(table, "date", None), "price_source": getattr(table, "source", None),
                "tags": dict(spec.tags), "scheduler": self._scheduler}
        batch = Batch()
        batch.event(self.created, "pool", None, None, "priced", data)
        self.engine.ledger.commit(batch)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        disp = self.engine.dispatcher
        disp.call(lambda: disp.at(time.time() + self._check_every, self._tick))

    def stop(self) -> None:
        """The pool closes: its nodes stop billing now (recorded as ``offline``)."""
        disp = self.engine.dispatcher
        try:
            disp.call(self._release_all, True, timeout=30)
        except Exception:  # noqa: BLE001 - the dispatcher is gone: write the release ourselves
            self._release_all(False)

    def _release_all(self, on_dispatcher: bool) -> None:
        self._stopped = True
        now = time.time()
        self._flush()
        disp = self.engine.dispatcher
        batch = disp.batch if on_dispatcher else Batch()
        for node_id, group in list(self._billed.items()):
            batch.node(self.engine.name, node_id, group, NodeState.OFFLINE.value, now)
            if on_dispatcher:
                disp.events.append(NodeStateChanged(self.engine.name, node_id, group, NodeState.OFFLINE.value, now,
                                                    "the pool closed"))
            self.meter.node_released(node_id, now)
        self._billed.clear()
        self.meter.scheduler_released(now)
        if on_dispatcher:
            self._samples(now, force=True)
        else:
            self.engine.ledger.commit(batch)

    # -- nodes -----------------------------------------------------------------------
    @_hook
    def node_changed(self, node, now: float) -> None:
        if node.state in BILLED_NODE_STATES and node.node_id not in self._billed and not self._stopped:
            since = billing.billed_since(self.engine.backend, node.node_id, now, self._released.get(node.node_id))
            if since < now:   # the ledger keeps when the bill started, for cost_from_ledger
                self.engine.dispatcher.batch.node(self.engine.name, node.node_id, node.group,
                                                  NodeState.STARTING.value, since)
            self._bill(node.node_id, node.group, node.slots, since)
        elif node.state in RELEASED_NODE_STATES and node.node_id in self._billed:
            self._flush()
            del self._billed[node.node_id]
            self._released[node.node_id] = now
            self.meter.node_released(node.node_id, now)

    def _bill(self, node_id: str, group: str, slots: int, now: float) -> None:
        try:
            self.meter.node_requested(node_id, group, now, slots=max(1, int(slots)))
        except SpecError:
            # A size without a price for this group (spot nodes an autoscale formula added): say so once.
            if group not in self._no_price:
                self._no_price.add(group)
                log.warning("batchnb: vm_size %r has no %s price; %s nodes of pool %r are metered at 0",
                            self.engine.spec.vm_size, group, group, self.engine.name)
            self.meter.node_requested(node_id, group, now, slots=max(1, int(slots)), price_per_hour=0.0)
        self._billed[node_id] = group

    # -- attempts --------------------------------------------------------------------
    @_hook
    def task_started(self, job, tr, node, now: float) -> None:
        # Held until the next hook: only then is it known whether the attempt rides alone
        # in its Dask task (holding its slots) or in a bundle (sharing one slot).
        with self._lock:
            self._pending.append((job, tr.spec.id, node, tr.spec.required_slots, now))

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        groups: dict[tuple, list] = {}
        for item in pending:
            groups.setdefault((item[2].node_id, item[4]), []).append(item)
        for members in groups.values():
            for job, task_id, node, slots, t in members:
                self._start(job, task_id, node, slots if len(members) == 1 else 1.0 / len(members), t)

    def _start(self, job, task_id: str, node, slots: float, t: float) -> None:
        job_id = job.spec.id
        if job.key not in self._seen_jobs:
            self._seen_jobs.add(job.key)
            self.meter.set_tags(job_id, job.spec.tags)
        if node.node_id not in self._billed:   # a node that never showed a billed state (address backend)
            self._bill(node.node_id, node.group, node.slots, t)
        try:
            self.meter.task_started(job_id, task_id, node.node_id, slots, t)
        except SpecError as exc:
            log.warning("batchnb cost meter: attempt of %s/%s not metered: %s", job_id, task_id, exc)
            return
        self._starts[(job.key, task_id, node.node_id)] = t

    def _prior_cost(self, job_id: str) -> Cost | None:
        """What a resumed or re-attached job cost before this pool (earlier pools or processes).

        Read from the ledger on first use, whether or not the job starts anything here: the
        budget of a job resumed over it must hold before its first dispatch. Attempts dispatched
        before this pool existed cannot appear later, so the answer (None too) is kept.
        """
        key = job_id.lower()
        if key in self._prior:
            return self._prior[key]
        prior = None
        if self.engine.ledger.dispatched_before(job_id, self.created):
            from ..cost.replay import cost_from_ledger
            prior = cost_from_ledger(self.engine.ledger, job_id=job_id, until=self.created)
        self._prior[key] = prior
        return prior

    @_hook
    def task_ended(self, job, tr, now: float) -> None:
        self._flush()
        node_id = tr.node or ""
        self.meter.task_ended(job.spec.id, tr.spec.id, node_id, now)
        start = self._starts.pop((job.key, tr.spec.id, node_id), None)
        if start is not None:
            done = self._done.setdefault(job.key, [0.0, 0])
            done[0] += max(0.0, now - start)
            done[1] += 1
        disp = self.engine.dispatcher
        if job.key in self._stopping:
            disp.at(now, lambda: self._end_if_drained(job))
        counts = job.counts
        if counts[TaskState.PENDING] + counts[TaskState.ACTIVE] == 0 and counts[TaskState.RUNNING] <= 1:
            # The last attempt ended: the views get the job's final amount now, not at the next sample.
            disp.at(now, lambda: self._final_sample(job))

    # -- budgets ---------------------------------------------------------------------
    def _mean_seconds(self, job) -> float | None:
        done = self._done.get(job.key)
        return done[0] / done[1] if done and done[1] else None

    def _slot_price(self) -> float:
        """Highest hourly price of one task slot among the billed nodes (a careful projection)."""
        groups = set(self._billed.values()) or {"dedicated"}
        prices = []
        for g in groups:
            try:
                prices.append(self.meter.hourly_price(g))
            except SpecError:
                prices.append(0.0)
        return max(prices) / self.engine.spec.task_slots_per_node

    def spent(self, job, now: float) -> float:
        prior = self._prior_cost(job.spec.id)
        return self.meter.cost(now, job.spec.id, detail=False).total + (prior.total if prior else 0.0)

    def _verdict(self, job, now: float) -> tuple[str, float, float]:
        """(ok|warn|stop, spent, spent + what the running attempts are projected to cost yet)."""
        spent = self.spent(job, now)
        committed = spent + self.meter.running_projection(job.spec.id, self._mean_seconds(job), now)
        guard = BudgetGuard(job.spec.budget, job.spec.budget_warn_fraction or 1e-12)
        return guard.check(spent, committed - spent), spent, committed

    @_hook
    def may_dispatch(self, job, tr, now: float) -> bool:
        self._flush()      # the previous Dask submission is complete: its attempts go into the meter
        if job.spec.budget is None:
            return True
        if job.key in self._stopping:
            return False
        # One full reckoning per job and turn; the tasks approved within the turn are added to it,
        # so a budgeted job of a million tiny tasks costs O(1) per task here.
        memo = self._memo.get(job.key)
        if memo is None or memo[0] != now:
            _, spent, committed = self._verdict(job, now)
            memo = self._memo[job.key] = [now, spent, committed]
        mean = self._mean_seconds(job)
        expected = self._slot_price() * tr.spec.required_slots * mean / 3600.0 if mean is not None else 0.0
        spent, committed = memo[1], memo[2] + expected
        verdict = BudgetGuard(job.spec.budget, job.spec.budget_warn_fraction or 1e-12).check(spent, committed - spent)
        if verdict == "stop":
            self._stopping.add(job.key)
            log.warning("batchnb: job %r dispatches no more tasks: spent %.6g + projected %.6g %s would pass "
                        "its budget %.6g", job.spec.id, spent, committed - spent, self.meter.currency,
                        job.spec.budget)
            self.engine.dispatcher.at(now, lambda: self._end_if_drained(job))
            return False
        memo[2] = committed
        if verdict == "warn":
            self._warn(job, spent, committed, now)
        return True

    def _warn(self, job, spent: float, committed: float, now: float) -> None:
        if job.budget_warned:
            return
        job.budget_warned = True
        disp = self.engine.dispatcher
        budget = job.spec.budget
        log.warning("batchnb: job %r has committed %.6g of its budget %.6g %s (warning at %g%%)", job.spec.id,
                    committed, budget, self.meter.currency, 100 * job.spec.budget_warn_fraction)
        disp.batch.event(now, "cost", job.spec.id, None, "budget_warning",
                         {"spent": spent, "committed": committed, "budget": budget})
        disp.events.append(JobStateChanged(job.spec.id, job.state.value, now, "budget_warning"))

    @_hook
    def _end_if_drained(self, job) -> None:
        if job.state == JobState.ACTIVE and job.counts[TaskState.RUNNING] == 0:
            self._end(job, time.time(), "its running tasks ended after dispatching stopped")

    def _end(self, job, now: float, why: str) -> None:
        disp = self.engine.dispatcher
        spent = self.spent(job, now)
        disp.batch.event(now, "cost", job.spec.id, None, "budget",
                         {"spent": spent, "budget": job.spec.budget, "why": why})
        log.warning("batchnb: job %r ends at its budget %.6g %s (spent %.6g): %s", job.spec.id, job.spec.budget,
                    self.meter.currency, spent, why)
        disp.terminate(job, "budget", now)

    def _tick(self) -> None:
        """On the dispatcher's thread: hard budget stops, warnings, cost samples; then again."""
        if self._stopped:
            return
        now = time.time()
        wake = now + self._check_every
        try:
            self._flush()
            for job in list(self.engine.dispatcher.jobs.values()):
                if job.state != JobState.ACTIVE or job.spec.budget is None:
                    continue
                verdict, spent, committed = self._verdict(job, now)
                if spent >= job.spec.budget and job.counts[TaskState.RUNNING]:
                    self._end(job, now, "its spend reached the budget; running tasks were killed")
                    continue
                if verdict != "ok":
                    self._warn(job, spent, committed, now)
                rate = self.meter.cost(now, job.spec.id, detail=False).rate_per_hour
                if rate > 0:   # wake when the budget would be reached at this burn rate
                    wake = min(wake, now + max(0.01, (job.spec.budget - spent) * 3600.0 / rate))
            self._samples(now)
        except Exception:  # noqa: BLE001 - keep ticking
            log.exception("batchnb cost meter: tick failed")
        self.engine.dispatcher.at(wake, self._tick)

    def _samples(self, now: float, force: bool = False) -> None:
        if now < self._next_sample and not force:
            return
        self._next_sample = now + self._sample_every
        disp = self.engine.dispatcher
        if not self._stopped:
            billing.reconcile_nodes(disp, self.engine.backend, self._billed, self._released)
        pool_cost = self.meter.cost(now, detail=False)
        disp.events.append(CostSample(self.engine.name, now, pool_cost.total, pool_cost.rate_per_hour,
                                      self.meter.currency))
        for job in disp.jobs.values():
            if job.state != JobState.COMPLETED:
                self._job_sample(job, now)

    @_hook
    def _final_sample(self, job) -> None:
        self._job_sample(job, time.time())

    def _job_sample(self, job, now: float) -> None:
        c = self.meter.cost(now, job.spec.id, detail=False)
        prior = self._prior_cost(job.spec.id)
        self.engine.dispatcher.events.append(CostSample(self.engine.name, now, c.total + (prior.total if prior else 0),
                                                       c.rate_per_hour, self.meter.currency, job.spec.id))

    @_hook
    def job_ended(self, job, now: float) -> None:
        self._flush()
        self._stopping.discard(job.key)
        self._done.pop(job.key, None)
        self._memo.pop(job.key, None)
        self._job_sample(job, now)

    # -- what the user asks (any thread) ---------------------------------------------
    def _sync(self) -> None:
        """Put attempts just dispatched into the meter (on the dispatcher's thread, between turns)."""
        disp = self.engine.dispatcher
        try:
            disp.call(self._flush, timeout=10)
        except Exception:  # noqa: BLE001 - closed pool: nothing is pending
            self._flush()

    def cost(self, now: float | None = None) -> Cost:
        self._sync()
        return self.meter.cost(now)

    def job_cost(self, job_id: str, now: float | None = None, detail: bool = True) -> Cost:
        self._sync()
        live = self.meter.cost(now, job_id, detail=detail)
        prior = self._prior_cost(job_id)
        return live if prior is None else merge(prior, live)

    def forecast(self, job_id: str) -> Forecast:
        """Projected total cost and finish time of a job from its tasks left and observed durations."""
        disp = self.engine.dispatcher

        def compute():
            now = time.time()
            self._flush()
            job = disp.jobs.get(job_id.lower())
            if job is None:
                raise SpecError("job id", job_id, f"is not dispatched by pool {self.engine.name!r}")
            left = job.counts[TaskState.PENDING] + job.counts[TaskState.ACTIVE]
            running = job.counts[TaskState.RUNNING]
            if job.state != JobState.ACTIVE:
                left = running = 0
            mean = self._mean_seconds(job)
            slots = disp.nodes.total_slots()
            rate = self._slot_price() * min(slots, left + running)   # the job's burn while it fills its slots
            return forecast([mean] if mean is not None else [], left, running, slots, rate,
                            self.spent(job, now), now)
        try:
            return disp.call(compute, timeout=10)
        except RuntimeError:   # the pool is closed: compute here, nothing moves any more
            return compute()

