"""Cost governance: prices, a meter of node time, attribution, budgets, forecasts.

Pure: no Dask and no clock of its own. The pool and the dispatcher feed the
:class:`CostMeter` with timestamps (``time.time()`` seconds); a pool without a
``vm_size`` costs nothing, a local pool given one reports what the same work
would cost in the cloud.

>>> meter = CostMeter(PriceTable({"Standard_D4s_v5": {"dedicated": 3600.0, "spot": 720.0}}), "Standard_D4s_v5")
>>> meter.node_requested("n1", "dedicated", t=0.0, slots=2)
>>> meter.task_started("job", "t1", "n1", slots=1, t=10.0)
>>> meter.task_ended("job", "t1", "n1", t=30.0)
>>> c = meter.cost(now=100.0)
>>> c.total, c.busy, c.idle, meter.cost(now=100.0, job_id="job").by_task
(100.0, 10.0, 90.0, {'t1': 10.0})
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .columns import Columns
from .value import SCHEDULER, Cost, check_tags
from .prices import GROUPS, RETAIL_PRICES_URL, PriceRefreshError, PriceTable
from ..errors import SpecError

__all__ = ["BudgetGuard", "Cost", "CostMeter", "Forecast", "PriceRefreshError", "PriceTable",
           "RETAIL_PRICES_URL", "forecast"]


class _Span:
    """One billing span of a node, from request to release."""

    __slots__ = ("node_id", "group", "slots", "price", "start", "end", "used")

    def __init__(self, node_id: str, group: str, slots: int, price: float, start: float):
        self.node_id, self.group, self.slots, self.price = node_id, group, slots, price
        self.start, self.end, self.used = start, None, 0


class _Attempt:
    __slots__ = ("job_id", "task_id", "span", "slots", "start")

    def __init__(self, job_id: str, task_id: str, span: _Span, slots: int, start: float):
        self.job_id, self.task_id, self.span, self.slots, self.start = job_id, task_id, span, slots, start


def _total(totals: dict, key) -> "_Total":
    """``totals[key]``, made when missing (``setdefault(key, _Total())`` made one each call)."""
    total = totals.get(key)
    if total is None:
        total = totals[key] = _Total()
    return total


class _Total:
    """What attempts held: of one task, or summed over a job.

    A job's is kept as one; a task's is kept as a row of :class:`Columns` (a job may have a
    million tasks), added to in place, and made into one only to show it.
    """

    __slots__ = ("attempts", "seconds", "slot_seconds", "dedicated_seconds", "spot_seconds", "dedicated", "spot")

    #: a task's total as a row of :class:`Columns` (the attempts an integer, the rest floats)
    TYPECODES = "q" + "d" * (len(__slots__) - 1)

    def __init__(self) -> None:
        self.attempts = 0
        self.seconds = self.slot_seconds = self.dedicated_seconds = self.spot_seconds = 0.0
        self.dedicated = self.spot = 0.0

    @classmethod
    def of(cls, values: tuple | None) -> _Total:
        """A total from a row of :class:`Columns` (None: nothing yet)."""
        out = cls()
        if values is not None:
            for name, value in zip(cls.__slots__, values):
                setattr(out, name, value)
        return out

    def add(self, attempt: _Attempt, end: float) -> tuple:
        """Add the time ``attempt`` held up to ``end`` (its count is added at its start); returns
        what was added, a row in the order of ``__slots__``, for a task's :class:`Columns` to add
        in place (a task's total made, added to and put back cost half of a task's metering)."""
        span, seconds = attempt.span, max(0.0, end - attempt.start)
        held = seconds * attempt.slots / span.slots  # node-equivalent seconds
        cost = span.price * seconds * attempt.slots / (3600.0 * span.slots)
        slot_seconds = seconds * attempt.slots
        self.seconds += seconds
        self.slot_seconds += slot_seconds
        if span.group == "spot":
            self.spot_seconds += held
            self.spot += cost
            return 0, seconds, slot_seconds, 0.0, held, 0.0, cost
        self.dedicated_seconds += held
        self.dedicated += cost
        return 0, seconds, slot_seconds, held, 0.0, cost, 0.0

    def plus(self, other: _Total | None) -> _Total:
        """A new total: ``self + other``."""
        out = _Total()
        for name in self.__slots__:
            setattr(out, name, getattr(self, name) + (getattr(other, name) if other is not None else 0))
        return out

    def row(self) -> dict[str, float]:
        return {"attempts": self.attempts, "seconds": self.seconds, "slot_seconds": self.slot_seconds,
                "node_seconds": self.dedicated_seconds + self.spot_seconds,
                "dedicated": self.dedicated, "spot": self.spot, "cost": self.dedicated + self.spot}




class CostMeter:
    """Integrates node uptime times price, and attributes it to jobs and tasks.

    Parameters
    ----------
    prices
        The price table; the shipped snapshot when ``vm_size`` is given alone.
    vm_size, region
        What the pool's nodes are. Without ``vm_size`` nodes are free (a local
        pool); with it, a local pool reports what its work would cost.
    tags
        The pool's tags, carried by every :class:`Cost`.

    All methods are thread-safe. Times are float seconds (``time.time()``).
    A node's time is billed from :meth:`node_requested` to
    :meth:`node_released`; a task attempt holds ``slots`` of its node from
    :meth:`task_started` to :meth:`task_ended` (or the node's release, as a
    preempted spot node stops billing at preemption).

    >>> meter = CostMeter(tags={"team": "vision"})     # free nodes: a local pool
    >>> meter.node_requested("n1", "dedicated", t=0.0, price_per_hour=7200.0)
    >>> meter.cost(now=3.0).total
    6.0
    """

    def __init__(self, prices: PriceTable | None = None, vm_size: str | None = None, region: str | None = None,
                 *, tags: Mapping[str, str] | None = None):
        if vm_size is not None and prices is None:
            prices = PriceTable.load()
        self.prices, self.vm_size, self.region = prices, vm_size, region
        self.currency = prices.currency if prices is not None else "USD"
        self.tags = check_tags("tags", tags)
        if vm_size is not None:
            self.hourly_price("dedicated")  # an unknown size fails at Pool(...), not at the first node
        self._lock = threading.Lock()
        self._up: dict[str, _Span] = {}
        self._spans: list[_Span] = []
        self._running: dict[tuple[str, str, str], _Attempt] = {}
        self._jobs: dict[str, _Total] = {}                 # ended attempts, per job
        self._tasks: dict[str, Columns] = {}               # ended attempts, per job and task (columns.py)
        self._job_tags: dict[str, dict[str, str]] = {}
        self._schedulers: list[_Span] = []     # one per pool life (a replay may hold several)

    def hourly_price(self, group: str) -> float:
        """The price of one node of the pool's size in ``group``; 0 without a ``vm_size``."""
        if group not in GROUPS:
            raise SpecError("group", group, "use 'dedicated' or 'spot'")
        if self.vm_size is None or self.prices is None:
            return 0.0
        return self.prices.price(self.vm_size, group, self.region)

    def node_requested(self, node_id: str, group: str, t: float, slots: int = 1,
                       price_per_hour: float | None = None) -> None:
        """Start billing ``node_id`` at ``t`` (``price_per_hour`` overrides the table's price)."""
        price = self.hourly_price(group) if price_per_hour is None else price_per_hour
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise SpecError("slots", slots, "a node has at least 1 task slot")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise SpecError("price_per_hour", price, "must be a finite number >= 0")
        with self._lock:
            if node_id in self._up:
                raise SpecError("node_id", node_id, "is already billed; release it before requesting it again")
            span = _Span(node_id, group, slots, float(price), t)
            self._up[node_id] = span
            self._spans.append(span)

    def node_released(self, node_id: str, t: float) -> None:
        """Stop billing ``node_id`` at ``t``; its running attempts end there too. Idempotent."""
        with self._lock:
            span = self._up.pop(node_id, None)
            if span is None:
                if not any(s.node_id == node_id for s in self._spans):
                    raise SpecError("node_id", node_id, "was never requested; call node_requested first")
                return
            span.end = max(t, span.start)
            for key in [k for k, a in self._running.items() if a.span is span]:
                self._close(self._running.pop(key), span.end)

    def scheduler_requested(self, t: float, price_per_hour: float) -> None:
        """Bill the pool's scheduler VM from ``t`` (a remote pool's): a line of its own,
        ``by_group["scheduler"]``, in the pool's cost and never in a job's."""
        if isinstance(price_per_hour, bool) or not isinstance(price_per_hour, (int, float)) \
                or not math.isfinite(price_per_hour) or price_per_hour < 0:
            raise SpecError("price_per_hour", price_per_hour, "must be a finite number >= 0")
        with self._lock:
            self._release_scheduler(t)
            self._schedulers.append(_Span(SCHEDULER, SCHEDULER, 1, float(price_per_hour), t))

    def scheduler_released(self, t: float) -> None:
        """Stop billing the scheduler VM at ``t`` (the pool closed). Idempotent."""
        with self._lock:
            self._release_scheduler(t)

    def _release_scheduler(self, t: float) -> None:
        if self._schedulers and self._schedulers[-1].end is None:
            self._schedulers[-1].end = max(t, self._schedulers[-1].start)

    def task_started(self, job_id: str, task_id: str, node_id: str, slots: float, t: float) -> None:
        """An attempt of ``task_id`` starts holding ``slots`` of ``node_id`` at ``t``.

        ``slots`` may be a fraction: ``n`` tiny tasks bundled into one slot
        hold ``1/n`` of it each.
        """
        with self._lock:
            span = self._up.get(node_id)
            if span is None:
                raise SpecError("node_id", node_id, f"task {task_id!r} started on a node that is not billed; "
                                "call node_requested first")
            free = span.slots - span.used
            if isinstance(slots, bool) or not isinstance(slots, (int, float)) or not 0 < slots <= free + 1e-9:
                raise SpecError("slots", slots, f"node {node_id!r} has {free:g} of "
                                f"{span.slots} slots free")
            key = (job_id, task_id, node_id)
            if key in self._running:
                raise SpecError("task_id", task_id, f"already runs on node {node_id!r}; end that attempt first")
            span.used += slots
            self._running[key] = _Attempt(job_id, task_id, span, slots, max(t, span.start))
            _total(self._jobs, job_id).attempts += 1
            tasks = self._tasks.get(job_id)
            if tasks is None:
                tasks = self._tasks[job_id] = Columns(_Total.TYPECODES)
            tasks.bump(task_id, 0, 1)      # column 0: attempts

    def task_ended(self, job_id: str, task_id: str, node_id: str, t: float) -> None:
        """The attempt ends at ``t``. A no-op when the node's release already ended it."""
        with self._lock:
            attempt = self._running.pop((job_id, task_id, node_id), None)
            if attempt is not None:
                self._close(attempt, t)

    def set_tags(self, job_id: str, tags: Mapping[str, str]) -> None:
        """Tag a job (its tags go over the pool's)."""
        checked = check_tags("tags", tags)
        with self._lock:
            self._job_tags[job_id] = checked

    def _close(self, attempt: _Attempt, end: float) -> None:
        attempt.span.used -= attempt.slots
        end = max(end, attempt.start)
        self._tasks[attempt.job_id].add(attempt.task_id, self._jobs[attempt.job_id].add(attempt, end))

    def running_projection(self, job_id: str, expected_seconds: float | None, now: float | None = None) -> float:
        """Cost still to come from ``job_id``'s running attempts, if each lasts ``expected_seconds``.

        An attempt already older than that is counted as ending now; with no
        expectation (no task has ended yet) the projection is 0.
        """
        if expected_seconds is None:
            return 0.0
        now = time.time() if now is None else now
        with self._lock:
            return sum(a.span.price * max(0.0, expected_seconds - (now - a.start)) * a.slots / (3600.0 * a.span.slots)
                       for a in self._running.values() if a.job_id == job_id)

    def cost(self, now: float | None = None, job_id: str | None = None, *, detail: bool = True) -> Cost:
        """The :class:`Cost` of the pool, or of ``job_id``, up to ``now`` (default: the clock).

        The pool's cost takes time in nodes, jobs and running attempts, never
        in tasks; a job's cost lists its tasks (``by_task``, ``frame()``)
        unless ``detail=False``, which a live view of a huge job wants.
        """
        now = time.time() if now is None else now
        with self._lock:
            # What running attempts held up to now, per task; ended attempts are in _jobs/_tasks.
            extra: dict[tuple[str, str], _Total] = {}
            rate = 0.0
            for a in self._running.values():
                if job_id is None or a.job_id == job_id:
                    extra.setdefault((a.job_id, a.task_id), _Total()).add(a, max(now, a.start))
                    if a.start <= now:
                        rate += a.span.price * a.slots / a.span.slots
            if job_id is not None:
                return self._job_cost(job_id, extra, rate, now, detail)
            return self._pool_cost(extra, now)

    def _job_cost(self, job_id: str, extra: dict[tuple[str, str], _Total], rate: float, now: float,
                  detail: bool) -> Cost:
        tags = {**self.tags, **self._job_tags.get(job_id, {})}
        job = self._jobs.get(job_id, _Total())
        for held in extra.values():
            job = job.plus(held)
        by_task, rows = {}, []
        if detail:
            tasks = self._tasks.get(job_id)
            for task_id, closed in tasks.items() if tasks is not None else ():
                row = _Total.of(closed).plus(extra.get((job_id, task_id))).row()   # with a running attempt's
                by_task[task_id] = row["cost"]
                rows.append({"job_id": job_id, "task_id": task_id, **row, **tags})
        total = job.dedicated + job.spot
        return Cost(total=total, currency=self.currency, by_group={"dedicated": job.dedicated, "spot": job.spot},
                    node_seconds={"dedicated": job.dedicated_seconds, "spot": job.spot_seconds}, busy=total,
                    idle=0.0, by_job={job_id: total}, by_task=by_task, rate_per_hour=rate, tags=tags,
                    job_id=job_id, at=now, rows=tuple(rows))

    def _pool_cost(self, extra: dict[tuple[str, str], _Total], now: float) -> Cost:
        by_group, node_seconds, rate = {g: 0.0 for g in GROUPS}, {g: 0.0 for g in GROUPS}, 0.0
        for span in self._spans:
            seconds = max(0.0, (now if span.end is None else span.end) - span.start)
            node_seconds[span.group] += seconds
            by_group[span.group] += span.price * seconds / 3600.0
            if span.end is None and span.start <= now:
                rate += span.price
        jobs = dict(self._jobs)
        for (job_id, _), held in extra.items():
            jobs[job_id] = jobs[job_id].plus(held)
        by_job, rows, busy = {}, [], 0.0
        for job_id, job in jobs.items():
            row = job.row()
            by_job[job_id] = row["cost"]
            busy += row["cost"]
            rows.append({"job_id": job_id, "tasks": len(self._tasks[job_id]), **row,
                         **self.tags, **self._job_tags.get(job_id, {})})
        nodes = by_group["dedicated"] + by_group["spot"]
        for sched in self._schedulers:     # overhead of the pool: neither a job's nor idle nodes'
            seconds = max(0.0, (now if sched.end is None else sched.end) - sched.start)
            node_seconds[SCHEDULER] = node_seconds.get(SCHEDULER, 0.0) + seconds
            by_group[SCHEDULER] = by_group.get(SCHEDULER, 0.0) + sched.price * seconds / 3600.0
            rate += sched.price if sched.end is None and sched.start <= now else 0.0
        return Cost(total=nodes + by_group.get(SCHEDULER, 0.0), currency=self.currency, by_group=by_group,
                    node_seconds=node_seconds, busy=busy, idle=nodes - busy, by_job=by_job, rate_per_hour=rate,
                    tags=dict(self.tags), at=now, rows=tuple(rows))


class BudgetGuard:
    """Decides whether a job may go on dispatching within its budget.

    Parameters
    ----------
    budget
        The most the job may cost, in the price table's currency.
    warn_fraction
        Committed cost (spent + projection) at which :meth:`check` says ``"warn"``.

    >>> guard = BudgetGuard(10.0, warn_fraction=0.8)
    >>> guard.check(5.0, 2.0), guard.check(7.0, 1.0), guard.check(9.0, 1.5)
    ('ok', 'warn', 'stop')
    """

    def __init__(self, budget: float, warn_fraction: float = 0.8):
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
            raise SpecError("budget", budget, "must be a finite number >= 0, in the price table's currency")
        if isinstance(warn_fraction, bool) or not isinstance(warn_fraction, (int, float)) or not 0 < warn_fraction <= 1:
            raise SpecError("warn_fraction", warn_fraction, "must be a number in (0, 1], e.g. 0.8")
        self.budget, self.warn_fraction = float(budget), float(warn_fraction)

    def check(self, spent: float, running_projection: float = 0.0) -> Literal["ok", "warn", "stop"]:
        """``"stop"`` when ``spent + running_projection`` passes the budget, ``"warn"`` from the warn fraction on.

        The dispatcher passes as projection what its running attempts will
        still cost (:meth:`CostMeter.running_projection`) plus the expected
        cost of the task it is about to start; on ``"stop"`` it starts no more.
        """
        committed = spent + running_projection
        if committed > self.budget:
            return "stop"
        return "warn" if committed >= self.warn_fraction * self.budget else "ok"

    def __repr__(self) -> str:
        return f"BudgetGuard(budget={self.budget!r}, warn_fraction={self.warn_fraction!r})"


@dataclass(frozen=True)
class Forecast:
    """Projected end of a job; every field is ``None`` while there is no data to project from."""

    total_cost: float | None
    finish_time: float | None
    remaining_seconds: float | None
    mean_duration: float | None = None


def forecast(done_durations: Sequence[float], tasks_left: int, running: int, slots: int,
             rate_per_hour: float, spent: float, now: float) -> Forecast:
    """Project a job's total cost and finish time.

    The model: every task lasts the mean ``d`` of the ended ones and takes one
    slot; a running task is on average half done. The work left,
    ``W = tasks_left * d + running * d / 2`` task-seconds, flows through
    ``slots`` slots, but no faster than one task: ``remaining = max(W / slots,
    d if tasks_left else d / 2)``. Meanwhile the pool keeps burning
    ``rate_per_hour``: ``total_cost = spent + rate_per_hour * remaining / 3600``
    and ``finish_time = now + remaining``. ``tasks_left`` counts the tasks not
    started yet, ``running`` those running.

    >>> forecast([50.0, 70.0], tasks_left=10, running=2, slots=4, rate_per_hour=720.0, spent=1.0, now=0.0)
    Forecast(total_cost=34.0, finish_time=165.0, remaining_seconds=165.0, mean_duration=60.0)
    """
    for name, value in (("tasks_left", tasks_left), ("running", running), ("slots", slots)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpecError(name, value, "must be an integer >= 0")
    d = sum(done_durations) / len(done_durations) if done_durations else None
    if tasks_left == 0 and running == 0:
        return Forecast(spent, now, 0.0, d)
    if d is None or slots == 0:  # nothing ended yet, or no capacity to finish on
        return Forecast(None, None, None, d)
    remaining = max((tasks_left * d + running * d / 2) / slots, d if tasks_left else d / 2)
    return Forecast(spent + rate_per_hour * remaining / 3600.0, now + remaining, remaining, d)
