"""Small parsers shared by the specs: durations, ids, choices.

Every function raises :class:`~batchnb.SpecError` naming the field and
the value, so the caller's error says exactly what to fix.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any, Iterable

from ..errors import SpecError

TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(value: Any, field: str, *, allow_none: bool = True) -> float | None:
    """Seconds from ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``, a number or a timedelta.

    >>> duration("10m", "max_wall_clock")
    600.0
    """
    if value is None:
        if allow_none:
            return None
        raise SpecError(field, value, "a duration is required, e.g. '90s', '10m', '2h' or a number of seconds")
    if isinstance(value, bool):
        raise SpecError(field, value, "expected a duration such as '90s', '10m', '2h', seconds or a timedelta")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise SpecError(field, value, "expected a duration such as '90s', '10m', '2h', '1d' or a number of seconds")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise SpecError(field, value, "expected a duration such as '90s', '10m', '2h', seconds or a timedelta")
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(field, value, "a duration must be finite and not negative")
    return seconds


def task_id(value: Any, field: str = "task id") -> str:
    """A task or job id: 1-64 letters, digits, '-' or '_' (Azure Batch's rule)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not TASK_ID_RE.match(value):
        raise SpecError(field, value, "use 1-64 characters of letters, digits, '-' and '_'")
    return value


def choice(value: Any, field: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if isinstance(value, str) and value.lower() in allowed:
        return value.lower()
    raise SpecError(field, value, f"expected one of {', '.join(allowed)}")


def integer(value: Any, field: str, *, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise SpecError(field, value, "expected a whole number")
    if minimum is not None and value < minimum:
        raise SpecError(field, value, f"must be at least {minimum}")
    return value


def number(value: Any, field: str, *, minimum: float | None = None, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(field, value, "expected a finite number")
    if minimum is not None and value < minimum:
        raise SpecError(field, value, f"must be at least {minimum}")
    return float(value)


def str_mapping(value: Any, field: str) -> dict[str, str]:
    """A mapping of names to string values (environment, tags)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(field, value, "expected a mapping of names to strings")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise SpecError(f"{field} name", key, "names must be non-empty strings without '=' or NUL")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or "\0" in item:
            raise SpecError(f"{field}[{key!r}]", item, "values must be strings")
        out[key] = item
    return out
