"""Values of the autoscale formula language and conversions to and from Python.

=============  ==========================================
formula type   Python value
=============  ==========================================
double         ``float``
doubleVec      ``tuple[float, ...]``
string         ``str``
timestamp      timezone-aware UTC ``datetime``
timeinterval   :class:`TimeInterval` (100 ns ticks, as .NET)
=============  ==========================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from .names import _TICKS_PER_SECOND

# .NET TimeSpan's range; beyond it Azure could not represent the interval either.
MAX_TICKS = 2**63 - 1


class Stop(Exception):
    """``stop()`` was called: end evaluation, keep what was assigned so far."""


@dataclass(frozen=True, order=True)
class TimeInterval:
    """A formula ``timeinterval``: a signed count of 100 ns ticks.

    Ticks rather than :class:`~datetime.timedelta` because timedelta stops at
    microseconds and ``TimeInterval_100ns`` must stay non-zero.

    >>> TimeInterval.from_timedelta(timedelta(minutes=15)).total_seconds()
    900.0
    """

    ticks: int

    @classmethod
    def from_timedelta(cls, value: timedelta) -> "TimeInterval":
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return cls(micros * 10)

    def total_seconds(self) -> float:
        return self.ticks / _TICKS_PER_SECOND

    def to_timedelta(self) -> timedelta:
        """The interval as a timedelta (rounded to microseconds)."""
        return timedelta(microseconds=round(self.ticks / 10))

    def __str__(self) -> str:
        try:
            return str(self.to_timedelta())
        except OverflowError:
            return f"{self.ticks} ticks"


def type_name(value: object) -> str:
    """The formula's name for the type of a Python value."""
    if isinstance(value, float):
        return "double"
    if isinstance(value, tuple):
        return "doubleVec"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, TimeInterval):
        return "timeinterval"
    return type(value).__name__


def as_utc(value: datetime) -> datetime:
    """A naive datetime is taken as UTC, an aware one is converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def from_python(value: object) -> object | None:
    """A formula value from a Python one, or ``None`` when there is no such type."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        try:
            return as_utc(value)
        except (OverflowError, ValueError):
            return None
    if isinstance(value, timedelta):
        return TimeInterval.from_timedelta(value)
    if isinstance(value, TimeInterval):
        return value
    return None


_W3C_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


def parse_time(text: str) -> datetime | None:
    """A timestamp from W3C-DTF or RFC 1123 text (the formats ``time()`` takes).

    Text without a zone is UTC. ``None`` when the text is neither format.
    """
    text = text.strip()
    match = _W3C_PARTIAL.match(text)
    try:
        if match:  # W3C-DTF's "YYYY" and "YYYY-MM", which fromisoformat refuses
            return datetime(int(match.group(1)), int(match.group(2) or 1), 1, tzinfo=timezone.utc)
        if re.match(r"^\d{4}-\d{2}-\d{2}", text):
            return as_utc(datetime.fromisoformat(text))
        if re.match(r"^[A-Za-z]{3},", text) or re.match(r"^\d{1,2} [A-Za-z]{3} \d{4}", text):
            return as_utc(parsedate_to_datetime(text))
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    return None


def format_value(value: object) -> str:
    """A value as Azure's evaluation results print it (``$curTime=2016-10-13T19:18:47.805Z``)."""
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return str(value)
