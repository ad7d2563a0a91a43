"""Metric histories and the sample methods of Azure's sampled variables.

Azure records each metric every 30 seconds; a formula reads them with
``$X.GetSample(...)``, ``GetSamplePercent``, ``GetSamplePeriod``, ``Count`` and
``HistoryBeginTime``. A history here holds the ``(timestamp, value)`` samples
one metric has, and is read "as of" the evaluation time: samples stamped after
``now`` do not exist yet.
"""

from __future__ import annotations

import bisect
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterable

from .values import TimeInterval, type_name

if TYPE_CHECKING:
    from .evaluator import Context
    from .parser import Method


class History:
    """The samples of one metric, sorted by time (timestamps are aware UTC)."""

    __slots__ = ("times", "values")

    def __init__(self, samples: Iterable[tuple[datetime, float]]):
        ordered = sorted(samples, key=lambda s: s[0])
        self.times = [t for t, _ in ordered]
        self.values = [v for _, v in ordered]

    def _end(self, now: datetime) -> int:
        return bisect.bisect_right(self.times, now)

    def latest(self, now: datetime) -> float | None:
        end = self._end(now)
        return self.values[end - 1] if end else None

    def upto(self, now: datetime) -> list[float]:
        return self.values[: self._end(now)]

    def between(self, low: datetime, high: datetime) -> list[float]:
        """Values stamped in ``[low, high]``, oldest first."""
        return self.values[bisect.bisect_left(self.times, low): bisect.bisect_right(self.times, high)]


def _instant(ctx: "Context", node: "Method", value: object, which: str) -> datetime:
    """A look-back interval (``now - value``) or a timestamp, as an instant."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, TimeInterval):
        try:
            return ctx.now - timedelta(microseconds=round(value.ticks / 10))
        except OverflowError:
            raise ctx.fail(f"{which} of {node.method}() reaches outside the years 1 to 9999", node) from None
    raise ctx.fail(f"{which} of {node.method}() must be a timeinterval or a timestamp, not a {type_name(value)}", node)


def _window(ctx: "Context", node: "Method", start: object, end: object | None) -> tuple[datetime, datetime]:
    first = _instant(ctx, node, start, "the start")
    second = ctx.now if end is None else _instant(ctx, node, end, "the end")
    # Azure's own examples give the look-backs in either order
    # (GetSample(1 * TimeInterval_Minute, 6 * TimeInterval_Minute)), so the
    # window is simply the span between the two instants.
    return (first, second) if first <= second else (second, first)


def _percent(ctx: "Context", values: list[float], low: datetime, high: datetime) -> float:
    span = (high - low).total_seconds()
    expected = max(1, math.floor(span / ctx.period.total_seconds()))
    return min(100.0, 100.0 * len(values) / expected)


def _required(ctx: "Context", node: "Method", value: object) -> float:
    if not isinstance(value, float):
        raise ctx.fail(f"the sample percent of {node.method}() must be a double, not a {type_name(value)}", node)
    if not 0.0 <= value <= 100.0:
        raise ctx.fail(f"the sample percent of {node.method}() must be between 0 and 100, not {value:g}", node)
    return value


def call_method(ctx: "Context", node: "Method", history: History, args: list[object]) -> object:
    """Evaluate ``$Metric.Method(args)`` against ``history``."""
    name = node.method
    if name == "GetSamplePeriod":
        return ctx.period
    if name == "Count":
        return float(len(history.upto(ctx.now)))
    if name == "HistoryBeginTime":
        end = history._end(ctx.now)
        if not end:
            raise ctx.fail(f"{node.target} has no samples yet, so it has no HistoryBeginTime()", node)
        return history.times[0]
    if name == "GetSamplePercent":
        low, high = _window(ctx, node, args[0], args[1] if len(args) > 1 else None)
        return _percent(ctx, history.between(low, high), low, high)
    # GetSample: by count, or by a time window with an optional sample percent.
    first = args[0]
    if isinstance(first, float):
        if len(args) != 1:
            raise ctx.fail("GetSample(count) takes one argument; give a timeinterval to ask for a sample percent", node)
        if not first >= 0.0:
            raise ctx.fail(f"GetSample(count) needs a count of 0 or more, not {first:g}", node)
        recent = history.upto(ctx.now)
        count = min(len(recent), int(first))
        return tuple(recent[len(recent) - count:])
    end, required = None, 0.0
    if len(args) == 2:
        if isinstance(args[1], float):
            required = _required(ctx, node, args[1])
        else:
            end = args[1]
    elif len(args) == 3:
        end, required = args[1], _required(ctx, node, args[2])
    low, high = _window(ctx, node, first, end)
    values = history.between(low, high)
    percent = _percent(ctx, values, low, high)
    if percent < required:
        raise ctx.fail(
            f"{node.target}.GetSample(): only {percent:.0f}% of the samples of "
            f"{low:%Y-%m-%d %H:%M:%S} to {high:%H:%M:%S} UTC are available, {required:g}% are required "
            "(check first with GetSamplePercent())", node)
    return tuple(values)
