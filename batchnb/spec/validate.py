"""Small parsers shared by the specs: durations, ids, choices.

Every function raises :class:`~batchnb.SpecError` naming the field and
the value, so the caller's error says exactly what to fix.
"""

from __future__ import annotations

import difflib
import functools
import inspect
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


def did_you_mean(name: Any, known: Iterable[str]) -> str | None:
    """The one of ``known`` that ``name`` most likely misspells (case aside), if any.

    >>> did_you_mean("max_task_retry", ["max_task_retries", "priority"])
    'max_task_retries'
    """
    if not isinstance(name, str):
        return None
    by_lower = {k.lower(): k for k in known if isinstance(k, str)}
    low = name.lower()
    close = difflib.get_close_matches(low, list(by_lower), n=1, cutoff=0.75)
    if close:
        return by_lower[close[0]]
    # Cut short or run on: "dependency" for dependency_action, "max_retries" for max.
    heads = [k for k in by_lower if min(len(k), len(low)) >= 3 and (k.startswith(low) or low.startswith(k))]
    return by_lower[heads[0]] if len(heads) == 1 else None


def unknown_keyword(owner: str, name: Any, value: Any, known: Iterable[str], *, kind: str = "keyword",
                    hint: str = "") -> SpecError:
    """The SpecError for a keyword (or field) ``owner`` does not take, naming the likeliest meant one.

    >>> str(unknown_keyword("pool.job()", "max_task_retry", 2, ["max_task_retries", "priority"]))
    "max_task_retry: 2 is invalid: not a keyword of pool.job(); did you mean 'max_task_retries'?"
    """
    known = sorted(k for k in known if isinstance(k, str))
    near = did_you_mean(name, known)
    advice = f"did you mean {near!r}?" if near else f"it takes {', '.join(known)}"
    # A name with a newline or other control character is shown quoted: the error is one line; an
    # empty name too, or the error would name no field.
    field = name if isinstance(name, str) and name and name.isprintable() else repr(name)
    return SpecError(field, value, f"not a {kind} of {owner}; " + (hint or advice))


def call_error(owner: str, sig: inspect.Signature, args: tuple, kwargs: dict) -> SpecError | None:
    """Why ``owner(*args, **kwargs)`` does not fit ``sig`` (without ``self``), as a SpecError; None if it fits."""
    params = list(sig.parameters.values())
    names = [p.name for p in params if p.kind is not p.VAR_KEYWORD]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for name, value in kwargs.items():
        if name not in names and not takes_any:
            return unknown_keyword(owner, name, value, names)
        if name in positional[:len(args)]:
            return SpecError(name, value, f"given twice to {owner}: by position and by keyword")
    if len(args) > len(positional) and not any(p.kind is p.VAR_POSITIONAL for p in params):
        return SpecError(owner, args, f"takes at most {len(positional)} positional arguments "
                                      f"({', '.join(positional)}); give the others by keyword")
    given = set(positional[:len(args)]) | set(kwargs)
    for p in params:
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in given:
            return SpecError(p.name, None, f"is required by {owner}")
    return None


def checked_keywords(cls: type) -> type:
    """Make a misspelt, missing or repeated argument of ``cls(...)`` a SpecError naming it.

    Python's own TypeError would blame the class's ``__init__`` and name no
    alternative; this says which keyword was meant. The check runs only when
    the call failed, so a spec made right costs nothing more.
    """
    init = cls.__init__
    sig = inspect.signature(init)
    sig = sig.replace(parameters=list(sig.parameters.values())[1:])
    owner = f"bnb.{cls.__name__}"

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except TypeError:
            error = call_error(owner, sig, args, kwargs)
            if error is None:
                raise
            raise error from None
    cls.__init__ = __init__
    return cls


#: Bounds on a document read from a file or given as JSON-like data: deeper nesting than any
#: job, task or pool needs, and no more values than YAML aliases may make of a small file.
MAX_DEPTH = 64
MAX_VALUES = 10_000_000
_CONTAINERS = (dict, list, tuple)


def document(data: Any, field: str) -> Any:
    """``data`` if its nesting and size are sane; a SpecError otherwise.

    Checked before anything walks ``data``: a structure that holds itself (a
    YAML alias of its own parent), nests past :data:`MAX_DEPTH`, or expands
    through shared references (aliases) past :data:`MAX_VALUES` values and to
    more than four times its own size would otherwise end in a RecursionError,
    a MemoryError or an endless loop far from the file that caused it.
    """
    sizes: dict[int, int] = {}      # expanded size of each container seen
    on_path: set[int] = set()
    unique = [0]

    def walk(node: Any, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise SpecError(field, "<a value holding itself>", "refers to itself (a YAML alias of its own parent?)")
        if depth > MAX_DEPTH:
            raise SpecError(field, "<deeply nested value>", f"is nested more than {MAX_DEPTH} levels deep")
        is_map = isinstance(node, dict)
        total = 1 + len(node) * (2 if is_map else 1)     # keys are scalars: YAML and JSON need them hashable
        unique[0] += total
        on_path.add(key)
        for child in (node.values() if is_map else node):
            if isinstance(child, _CONTAINERS):
                total += walk(child, depth + 1) - 1
        on_path.discard(key)
        if total > MAX_VALUES and total > 4 * unique[0]:
            raise SpecError(field, "<huge value>", f"expands to more than {MAX_VALUES:,} values through "
                                                   "YAML aliases")
        sizes[key] = total
        return total

    if isinstance(data, _CONTAINERS):
        walk(data, 0)
    return data
