"""Autoscale policy: metric history and the decision of target node counts.

Pure, like distributed's ``adaptive_core``: no Dask and no pool here. The pool
records a sample of its metrics every ``sample_period`` into a
:class:`MetricHistory` and, every ``autoscale_interval``, asks its policy to
``decide`` the :class:`Targets`.

A policy is made from what the user passes as ``Pool(autoscale=...)``:

- an Azure Batch formula string (or a parsed :class:`~batchnb.formula.Formula`)
  -> :class:`FormulaPolicy`, parsed at once so a bad formula fails at ``Pool(...)``;
- a callable ``f(metrics) -> Targets | dict | (dedicated, spot)``
  -> :class:`CallablePolicy`; ``metrics`` is a read-only :class:`Metrics`.

>>> policy = make_policy(lambda m: (min(10, m.pending_tasks), 0))
>>> h = MetricHistory()
>>> t0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)
>>> h.record(t0, {"$PendingTasks": 4})
>>> policy.decide(h, t0, {"$CurrentDedicatedNodes": 1})
Targets(dedicated=4, spot=0, deallocation='requeue')
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone  # noqa: F401 - the doctests use timezone
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from .formula import names as names
from .errors import SpecError
from .formula import DEALLOCATION_OPTIONS, DEFAULT_SAMPLE_PERIOD, Formula, parse
from .formula.values import as_utc

__all__ = ["CallablePolicy", "FormulaPolicy", "MetricHistory", "Metrics", "Policy", "Targets", "make_policy"]


class MetricHistory:
    """A thread-safe, time-bounded record of ``(timestamp, value)`` per metric name.

    Formulas read the metrics recorded under Azure's names (``$PendingTasks``,
    ``$CPUPercent``, ...); other names are kept for callable policies.

    >>> h = MetricHistory(retention=timedelta(hours=1))
    >>> h.record(datetime(2024, 5, 1, 8, 0), {"$PendingTasks": 12})
    >>> h.samples()["$PendingTasks"][0][1]
    12.0
    """

    def __init__(self, retention: timedelta = timedelta(hours=25)):
        if not isinstance(retention, timedelta) or retention <= timedelta(0):
            raise SpecError("retention", retention, "expected a positive timedelta")
        self.retention = retention
        self._lock = threading.Lock()
        self._times: dict[str, list[datetime]] = {}
        self._values: dict[str, list[float]] = {}

    def record(self, now: datetime, values: Mapping[str, float]) -> None:
        """Add one sample per metric at ``now`` and drop samples older than the retention."""
        if not isinstance(now, datetime):
            raise SpecError("now", now, "expected a datetime (naive ones are taken as UTC)")
        when = as_utc(now)
        checked = []
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise SpecError("metric name", name, "expected a non-empty string such as '$PendingTasks'")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SpecError(f"metric {name}", value, "expected a finite number")
            checked.append((name, float(value)))
        with self._lock:
            for name, value in checked:
                times = self._times.setdefault(name, [])
                vals = self._values.setdefault(name, [])
                at = bisect.bisect_right(times, when)  # samples may arrive out of order
                times.insert(at, when)
                vals.insert(at, value)
                cut = bisect.bisect_left(times, times[-1] - self.retention)
                if cut:
                    del times[:cut], vals[:cut]

    def samples(self, names: Iterable[str] | None = None) -> dict[str, list[tuple[datetime, float]]]:
        """A copy of the history: ``{name: [(timestamp, value), ...]}``, oldest first."""
        with self._lock:
            wanted = self._times.keys() if names is None else [n for n in names if n in self._times]
            return {n: list(zip(self._times[n], self._values[n])) for n in wanted}

    def latest(self, name: str) -> float | None:
        """The most recent value of a metric, or ``None``."""
        with self._lock:
            vals = self._values.get(name)
            return vals[-1] if vals else None


@dataclass(frozen=True)
class Targets:
    """Target node counts per node group, and what to do with tasks on removed nodes.

    >>> Targets(2, 8, "taskcompletion")
    Targets(dedicated=2, spot=8, deallocation='taskcompletion')
    """

    dedicated: int
    spot: int
    deallocation: str = "requeue"

    def __post_init__(self) -> None:
        for field in ("dedicated", "spot"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"Targets.{field}", value, "expected an int of 0 or more")
        if self.deallocation not in DEALLOCATION_OPTIONS:
            raise SpecError("Targets.deallocation", self.deallocation, "expected one of " + ", ".join(DEALLOCATION_OPTIONS))


class Policy:
    """Decides targets from the metric history; subclasses say how."""

    def decide(self, history: MetricHistory, now: datetime, current: Mapping[str, Any]) -> Targets:
        """The targets at ``now``; ``current`` holds ``$CurrentDedicatedNodes`` and the like."""
        raise NotImplementedError


class FormulaPolicy(Policy):
    """A policy that evaluates an Azure Batch autoscale formula.

    Non-integer targets are truncated, as Azure does (its own examples round
    up by hand: ``(tasks + 3) / 4``). ``last_results`` holds the variables of
    the latest evaluation, for views and ``pool.evaluate_autoscale``.
    Evaluation errors propagate as FormulaError; Azure then leaves the pool as it is.

    >>> policy = FormulaPolicy(parse("$TargetDedicatedNodes = $CurrentDedicatedNodes * 1.5"))
    >>> policy.decide(MetricHistory(), datetime(2024, 5, 1, 8, 0), {"$CurrentDedicatedNodes": 3})
    Targets(dedicated=4, spot=0, deallocation='requeue')
    """

    def __init__(self, formula: Formula, sample_period: timedelta = DEFAULT_SAMPLE_PERIOD):
        self.formula = formula
        self.sample_period = sample_period
        self.last_results: dict[str, object] | None = None

    def __repr__(self) -> str:
        return f"FormulaPolicy({self.formula!r})"

    def decide(self, history: MetricHistory, now: datetime, current: Mapping[str, Any]) -> Targets:
        variables = {k: v for k, v in (current or {}).items() if names.is_read_only(k) or names.is_settable(k)}
        metrics = history.samples(n for n in self.formula.system_variables if names.is_read_only(n))
        results = self.formula.evaluate(metrics, now, variables, sample_period=self.sample_period)
        self.last_results = results
        return Targets(math.floor(results[names.TARGET_DEDICATED]), math.floor(results[names.TARGET_LOW_PRIORITY]),
                       results[names.DEALLOCATION])


class Metrics:
    """The read-only view a callable policy receives.

    - ``m.pending_tasks``, ``m.cpu_percent``, ``m.current_dedicated_nodes``, ...:
      the latest value of each Azure service variable under its snake_case name
      (from ``current`` when the pool gives it, else the latest sample, else 0;
      ``task_slots_per_node`` defaults to 1). ``m.current_spot_nodes`` is
      ``$CurrentLowPriorityNodes``.
    - ``m["$PendingTasks"]`` or ``m["pending_tasks"]``: the same by name; also
      any other recorded metric by its own name.
    - ``m.samples``: ``{"$PendingTasks": ((timestamp, value), ...), ...}``, oldest first.
    - ``m.values("pending_tasks", last=timedelta(minutes=15))``: values of a window.
    - ``m.now``: the evaluation time (aware UTC).

    >>> m = Metrics({"$PendingTasks": [(datetime(2024, 5, 1, 8, 0), 6.0)]},
    ...             {"$CurrentDedicatedNodes": 2}, datetime(2024, 5, 1, 8, 0))
    >>> m.pending_tasks, m.current_dedicated_nodes, m.task_slots_per_node
    (6.0, 2.0, 1.0)
    """

    __slots__ = ("_samples", "_current", "now")
    _SNAKE = {names.snake_name(n): n for n in (*names.READ_ONLY, *names.SETTABLE[:2])}
    _SNAKE["current_spot_nodes"] = "$CurrentLowPriorityNodes"

    def __init__(self, samples: Mapping[str, list[tuple[datetime, float]]], current: Mapping[str, Any], now: datetime):
        frozen = {k: tuple(v) for k, v in samples.items()}
        object.__setattr__(self, "_samples", MappingProxyType(frozen))
        object.__setattr__(self, "_current", MappingProxyType(dict(current or {})))
        object.__setattr__(self, "now", as_utc(now))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Metrics is read-only")

    @property
    def samples(self) -> Mapping[str, tuple[tuple[datetime, float], ...]]:
        return self._samples

    def _name(self, key: str) -> str:
        return self._SNAKE.get(key, key)

    def __getitem__(self, key: str) -> float:
        name = self._name(key)
        if name in self._current:
            current = self._current[name]
            return float(current) if isinstance(current, (int, float)) and not isinstance(current, bool) else current
        recorded = self._samples.get(name)
        if recorded:
            return recorded[-1][1]
        if name in self._SNAKE.values() or names.is_read_only(name):
            return 1.0 if name == "$TaskSlotsPerNode" else 0.0
        raise KeyError(key)

    def __getattr__(self, attr: str) -> float:
        if attr in self._SNAKE:
            return self[attr]
        raise AttributeError(f"Metrics has no {attr!r}; known names: {', '.join(sorted(self._SNAKE))}")

    def __dir__(self) -> list[str]:
        return sorted({*self._SNAKE, "samples", "values", "now"})

    def values(self, key: str, last: timedelta | None = None) -> list[float]:
        """Values of one metric, oldest first; only those of the ``last`` interval if given."""
        recorded = self._samples.get(self._name(key), ())
        since = self.now - last if last is not None else None
        return [v for t, v in recorded if since is None or t >= since]

    def __repr__(self) -> str:
        shown = ", ".join(f"{names.snake_name(k)}={self[k]:g}" for k in ("$PendingTasks", "$CurrentDedicatedNodes",
                                                                          "$CurrentLowPriorityNodes"))
        return f"<Metrics at {self.now:%Y-%m-%d %H:%M:%S}Z {shown}>"


_KEYS = {
    "dedicated": "dedicated", "spot": "spot", "deallocation": "deallocation",
    names.TARGET_DEDICATED: "dedicated", names.TARGET_LOW_PRIORITY: "spot", names.DEALLOCATION: "deallocation",
}


class CallablePolicy(Policy):
    """A policy written in Python: ``fn(metrics) -> Targets | dict | (dedicated, spot[, deallocation])``.

    A dict uses the keys ``dedicated``, ``spot``, ``deallocation`` (or Azure's
    ``$TargetDedicatedNodes``, ...). A missing count keeps the current one;
    negative counts become 0 and fractions are truncated, as for formulas.
    Anything else raises SpecError naming the policy and what it returned.

    >>> policy = CallablePolicy(lambda m: {"spot": m.pending_tasks / 2})
    >>> h = MetricHistory()
    >>> h.record(datetime(2024, 5, 1, 8, 0), {"$PendingTasks": 9})
    >>> policy.decide(h, datetime(2024, 5, 1, 8, 0), {"$CurrentDedicatedNodes": 1})
    Targets(dedicated=1, spot=4, deallocation='requeue')
    """

    def __init__(self, fn: Callable[[Metrics], Any]):
        self.fn = fn
        self.name = getattr(fn, "__qualname__", None) or repr(fn)

    def __repr__(self) -> str:
        return f"CallablePolicy({self.name})"

    def decide(self, history: MetricHistory, now: datetime, current: Mapping[str, Any]) -> Targets:
        current = dict(current or {})
        result = self.fn(Metrics(history.samples(), current, now))
        if isinstance(result, Targets):
            return result
        field = f"return value of autoscale policy {self.name}"
        if isinstance(result, Mapping):
            unknown = [k for k in result if k not in _KEYS]
            if unknown:
                raise SpecError(field, result, f"unknown key {unknown[0]!r}; use 'dedicated', 'spot' and 'deallocation'")
            chosen = {_KEYS[k]: v for k, v in result.items()}
        elif isinstance(result, (tuple, list)) and len(result) in (2, 3):
            chosen = dict(zip(("dedicated", "spot", "deallocation"), result))
        else:
            raise SpecError(field, result, "expected Targets, a dict or a (dedicated, spot) tuple")
        fallback = {"dedicated": current.get("$CurrentDedicatedNodes", 0), "spot": current.get("$CurrentLowPriorityNodes", 0)}
        counts = {k: _count(field, result, k, chosen.get(k, fallback[k])) for k in ("dedicated", "spot")}
        deallocation = chosen.get("deallocation", "requeue")
        if not (isinstance(deallocation, str) and deallocation.lower() in DEALLOCATION_OPTIONS):
            raise SpecError(field, result, "deallocation must be one of " + ", ".join(DEALLOCATION_OPTIONS))
        return Targets(counts["dedicated"], counts["spot"], deallocation.lower())


def _count(field: str, result: object, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(field, result, f"{key} must be a finite number, not {value!r}")
    return max(0, math.floor(value))


def make_policy(spec: object, *, sample_period: timedelta = DEFAULT_SAMPLE_PERIOD) -> Policy:
    """A policy from ``Pool(autoscale=...)``: a formula string, a Formula or a callable.

    >>> make_policy("$TargetDedicatedNodes = 2")
    FormulaPolicy(<Formula 1 statements: '$TargetDedicatedNodes = 2'>)
    """
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, str):
        return FormulaPolicy(parse(spec), sample_period)
    if isinstance(spec, Formula):
        return FormulaPolicy(spec, sample_period)
    if callable(spec):
        return CallablePolicy(spec)
    raise SpecError("autoscale", spec, "expected an Azure Batch formula string or a callable(metrics) -> Targets")

