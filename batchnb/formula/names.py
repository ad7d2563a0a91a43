"""The names an Azure Batch autoscale formula knows: variables, constants, functions.

One table shared by the parser (static checks), the evaluator and
:mod:`batchnb.autoscale` (which metrics to record), so the three never
disagree about what ``$PendingTasks`` is.
"""

from __future__ import annotations

import re

#: Read-only service-defined variables, as in Azure's "Variables" tables. Each is
#: both a plain value (the latest one) and a sampled metric with
#: ``GetSample()`` and friends.
READ_ONLY: tuple[str, ...] = (
    "$CPUPercent",
    "$WallClockSeconds",
    "$MemoryBytes",
    "$DiskBytes",
    "$DiskReadBytes",
    "$DiskWriteBytes",
    "$DiskReadOps",
    "$DiskWriteOps",
    "$NetworkInBytes",
    "$NetworkOutBytes",
    "$SampleNodeCount",
    "$ActiveTasks",
    "$RunningTasks",
    "$PendingTasks",
    "$SucceededTasks",
    "$FailedTasks",
    "$TaskSlotsPerNode",
    "$CurrentDedicatedNodes",
    "$CurrentLowPriorityNodes",
    "$UsableNodeCount",
    "$PreemptedNodeCount",
)

#: Older names Azure still accepts, mapped to the current ones.
READ_ONLY_ALIASES: dict[str, str] = {"$CurrentDedicated": "$CurrentDedicatedNodes"}

TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
DEALLOCATION = "$NodeDeallocationOption"

#: Read-write service-defined variables: what a formula decides.
SETTABLE: tuple[str, ...] = (TARGET_DEDICATED, TARGET_LOW_PRIORITY, DEALLOCATION)

#: Azure's documented aliases of the settable targets. When a formula sets
#: both a name and its alias, the full name wins (Azure's rule).
SETTABLE_ALIASES: dict[str, str] = {
    "$TargetDedicated": TARGET_DEDICATED,
    "$TargetLowPriority": TARGET_LOW_PRIORITY,
}

#: Values of ``$NodeDeallocationOption``; written as bare words in formulas.
DEALLOCATION_OPTIONS: tuple[str, ...] = ("requeue", "terminate", "taskcompletion", "retaineddata")

_TICKS_PER_SECOND = 10_000_000  # .NET TimeSpan ticks are 100 ns
_DAY = 86_400 * _TICKS_PER_SECOND

#: ``TimeInterval_*`` constants in 100 ns ticks.
TIME_INTERVALS: dict[str, int] = {
    "TimeInterval_Zero": 0,
    "TimeInterval_100ns": 1,
    "TimeInterval_Microsecond": 10,
    "TimeInterval_Millisecond": 10_000,
    "TimeInterval_Second": _TICKS_PER_SECOND,
    "TimeInterval_Minute": 60 * _TICKS_PER_SECOND,
    "TimeInterval_Hour": 3600 * _TICKS_PER_SECOND,
    "TimeInterval_Day": _DAY,
    "TimeInterval_Week": 7 * _DAY,
    "TimeInterval_Year": 365 * _DAY,
}

#: Functions: name -> (fewest, most) arguments; ``None`` means no upper bound.
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "avg": (1, None),
    "ceil": (1, None),
    "floor": (1, None),
    "len": (1, None),
    "lg": (1, None),
    "ln": (1, None),
    "log": (1, None),
    "max": (1, None),
    "min": (1, None),
    "norm": (1, None),
    "percentile": (2, 2),
    "rand": (0, 0),
    "range": (1, None),
    "round": (1, None),
    "std": (1, None),
    "stop": (0, 0),
    "sum": (1, None),
    "time": (0, 1),
    "val": (2, 2),
}

#: Methods of a sampled variable: name -> (fewest, most) arguments.
METHODS: dict[str, tuple[int, int]] = {
    "GetSample": (1, 3),
    "GetSamplePercent": (1, 2),
    "GetSamplePeriod": (0, 0),
    "Count": (0, 0),
    "HistoryBeginTime": (0, 0),
}

#: Members of a timestamp.
TIMESTAMP_MEMBERS: tuple[str, ...] = ("year", "month", "day", "weekday", "hour", "minute", "second")

#: Upper bounds Azure puts on a formula.
MAX_FORMULA_BYTES = 8 * 1024
MAX_STATEMENTS = 100


def canonical(name: str) -> str:
    """The current name of a system variable, resolving Azure's aliases."""
    return READ_ONLY_ALIASES.get(name) or SETTABLE_ALIASES.get(name) or name


def is_read_only(name: str) -> bool:
    return name in READ_ONLY or name in READ_ONLY_ALIASES


def is_settable(name: str) -> bool:
    return name in SETTABLE or name in SETTABLE_ALIASES


def is_constant(name: str) -> bool:
    return name in TIME_INTERVALS or name in DEALLOCATION_OPTIONS


_ALL_BUILTIN = {n.lower(): n for n in (*READ_ONLY, *READ_ONLY_ALIASES, *SETTABLE, *SETTABLE_ALIASES, *TIME_INTERVALS)}


def near_builtin(name: str) -> str | None:
    """The built-in name that ``name`` equals but for case, if any.

    A formula that writes ``$targetDedicatedNodes`` would otherwise set a user
    variable and silently scale nothing.
    """
    found = _ALL_BUILTIN.get(name.lower())
    return found if found is not None and found != name else None


def _distance(a: str, b: str, cap: int) -> int:
    """Edits (insert, delete, replace, swap of neighbours) from ``a`` to ``b``; ``cap + 1`` once past ``cap``."""
    if abs(len(a) - len(b)) > cap:
        return cap + 1
    before, row = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, before[j - 2] + 1)
            current.append(cost)
        if min(current) > cap:
            return cap + 1
        before, row = row, current
    return row[-1]


def near_miss(name: str, candidates) -> str | None:
    """The one candidate ``name`` is a likely typo of: one or two edits away, case aside.

    Two edits only for names of ten characters or more, so that short user
    variables (``$x``, ``$n2``) are never taken for typos of each other.

    >>> near_miss("$TargetDedicatedNode", SETTABLE)
    '$TargetDedicatedNodes'
    >>> near_miss("$TargetDedicatedNodesMax", SETTABLE) is None
    True
    """
    cap = 2 if len(name) >= 10 else 1
    found = sorted((_distance(name.lower(), c.lower(), cap), c) for c in candidates if c != name)
    return found[0][1] if found and found[0][0] <= cap else None


#: Every name a formula knows without assigning it.
BUILTIN_NAMES: tuple[str, ...] = (*READ_ONLY, *READ_ONLY_ALIASES, *SETTABLE, *SETTABLE_ALIASES, *TIME_INTERVALS,
                                  *DEALLOCATION_OPTIONS)


def snake_name(name: str) -> str:
    """``$PendingTasks`` -> ``pending_tasks``; ``$CPUPercent`` -> ``cpu_percent``."""
    bare = name.lstrip("$")
    bare = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", bare)
    bare = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", bare)
    return bare.lower()
