"""Job schedules (Azure's JobSchedule): :class:`ScheduleSpec`, and when its runs are due.

The decisions are pure functions of the spec, the clock and how many of the
schedule's jobs are active, tested without a pool (as distributed's
``adaptive_core`` is): :func:`next_run` says when the next run is due and
:func:`step` what to do now. :mod:`batchnb.extensions.schedules` binds them
to a pool's dispatcher and its ledger.

Azure's meanings hold. Runs are due every ``every`` from ``do_not_run_until``
(or from when the schedule was made), or at the times of a ``cron``
expression (local time, as crontab); none after ``do_not_run_after``. A run
due while ``max_active`` jobs of the schedule are active waits; one that
cannot start inside ``start_window`` after it came due is skipped, and so is
one still waiting when the next comes due (a due run is not carried
forward). A spec with neither ``every`` nor ``cron`` makes one run (Azure's
schedule without ``recurrenceInterval``).

>>> from datetime import datetime
>>> s = ScheduleSpec("nightly", cron="0 2 * * *")
>>> made = datetime(2026, 1, 1, 12, 0).timestamp()
>>> datetime.fromtimestamp(next_run(s, None, made))
datetime.datetime(2026, 1, 2, 2, 0)
>>> s = ScheduleSpec("often", every="2s", start_window="1s")
>>> step(s, made, next_due=made, pending=None, now=made + 0.1, active=0)[2]
[Decision(kind='started', due=..., reason=None, count=1)]
>>> step(s, made, next_due=made + 2, pending=made, now=made + 1.5, active=1)[2][0].kind
'skipped'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from collections.abc import Mapping
from typing import Any

from . import validate as v
from .codec import from_dict, to_dict
from .model import JobSpec
from ..errors import SpecError
from ..states import ScheduleRunOutcome

#: A schedule's name leaves room for ``-job-<n>`` in its jobs' ids (64 characters at most, as Azure's).
NAME_LIMIT = 50
#: Recurrences counted one by one (cron) before a long outage's count is given as "at least".
_COUNT_LIMIT = 10_000


def job_id(schedule: str, n: int) -> str:
    """The id of the job of a schedule's ``n``-th started run.

    Azure names it ``<schedule id>:job-<n>``; a batchnb id holds no ``:``, so
    the separator is ``-``.

    >>> job_id("nightly", 3)
    'nightly-job-3'
    """
    return f"{schedule}-job-{n}"


def moment(value: Any, field_name: str) -> float | None:
    """Seconds since the epoch from a datetime (naive: local time), ISO 8601 text or a number.

    >>> moment("2026-01-01T00:00:00Z", "do_not_run_until")
    1767225600.0
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise SpecError(field_name, value, "expected a datetime, ISO 8601 text or seconds since the epoch")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise SpecError(field_name, value, "must be a finite time")
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise SpecError(field_name, value, "expected ISO 8601 text such as '2026-01-01T02:00:00Z'") from None
    if isinstance(value, datetime):
        return value.timestamp()
    raise SpecError(field_name, value, "expected a datetime, ISO 8601 text or seconds since the epoch")


def _cron(value: Any) -> str | None:
    if value is None:
        return None
    from croniter import croniter
    if not isinstance(value, str) or not croniter.is_valid(value):
        raise SpecError("cron", value, "expected a cron expression such as '0 2 * * *' (minute hour day month "
                                       "weekday)")
    return value.strip()


@v.checked_keywords
@dataclass(frozen=True)
class ScheduleSpec:
    """A job schedule: when runs are due, and the job each run makes.

    ``job`` is the template of every run's job (its options and tasks; its id
    is replaced by :func:`job_id`), or None when a builder function adds the
    tasks. ``every`` is a duration (``"2s"``, ``"1d"``, a timedelta) and
    ``cron`` a cron expression: one of them, or neither for a single run.

    >>> ScheduleSpec("hourly", every="1h", max_active=2).every
    3600.0
    >>> ScheduleSpec("x", every="1h", cron="0 * * * *")
    Traceback (most recent call last):
    ...
    batchnb.SpecError: cron: '0 * * * *' is invalid: give every= or cron=, not both (every='1h')
    """

    id: str
    job: JobSpec | None = None
    every: Any = None
    cron: str | None = None
    do_not_run_until: Any = None
    do_not_run_after: Any = None
    start_window: Any = None
    max_active: int = 1

    def __post_init__(self):
        name = v.task_id(self.id, "schedule name")
        if len(name) > NAME_LIMIT:
            raise SpecError("schedule name", name, f"use at most {NAME_LIMIT} characters: its jobs are named "
                                                   f"{job_id(name[:8], 1)!r}... and a job id has 64 at most")
        object.__setattr__(self, "id", name)
        if self.job is not None and not isinstance(self.job, JobSpec):
            raise SpecError("job", self.job, "expected a bnb.JobSpec (the template of each run's job) or None")
        if self.every is not None and self.cron is not None:
            raise SpecError("cron", self.cron, f"give every= or cron=, not both (every={self.every!r})")
        every = v.duration(self.every, "every")
        if every is not None and every <= 0:
            raise SpecError("every", self.every, "must be longer than 0 seconds")
        object.__setattr__(self, "every", every)
        object.__setattr__(self, "cron", _cron(self.cron))
        until = moment(self.do_not_run_until, "do_not_run_until")
        after = moment(self.do_not_run_after, "do_not_run_after")
        if until is not None and after is not None and after < until:
            raise SpecError("do_not_run_after", self.do_not_run_after,
                            f"is before do_not_run_until ({self.do_not_run_until}): no run could be due")
        object.__setattr__(self, "do_not_run_until", until)
        object.__setattr__(self, "do_not_run_after", after)
        window = v.duration(self.start_window, "start_window")
        if window is not None and window <= 0:
            raise SpecError("start_window", self.start_window, "must be longer than 0 seconds (None: no limit)")
        object.__setattr__(self, "start_window", window)
        object.__setattr__(self, "max_active", v.integer(self.max_active, "max_active", minimum=1))

    def template(self) -> JobSpec:
        """The job spec each run starts from (the schedule's ``job``, or an empty one)."""
        return self.job if self.job is not None else JobSpec(self.id)

    def with_(self, **changes: Any) -> ScheduleSpec:
        return replace(self, **changes)


def schedule_to_dict(spec: ScheduleSpec) -> dict:
    """The JSON form of a schedule (the ledger's; times as seconds since the epoch).

    >>> schedule_to_dict(ScheduleSpec("s", every="1m"))
    {'id': 's', 'every': 60.0}
    """
    out: dict[str, Any] = {"id": spec.id}
    if spec.job is not None:
        out["job"] = to_dict(spec.job)
    for name in ("every", "cron", "do_not_run_until", "do_not_run_after", "start_window"):
        if getattr(spec, name) is not None:
            out[name] = getattr(spec, name)
    if spec.max_active != 1:
        out["max_active"] = spec.max_active
    return out


def schedule_from_dict(data: Mapping) -> ScheduleSpec:
    """A :class:`ScheduleSpec` from :func:`schedule_to_dict`'s form."""
    if not isinstance(data, Mapping):
        raise SpecError("ScheduleSpec", data, "expected a mapping")
    data = dict(data)
    if isinstance(data.get("job"), Mapping):
        data["job"] = from_dict(JobSpec, data["job"])
    return ScheduleSpec(**data)


# -- when runs are due ------------------------------------------------------------------
def _cron_next(expr: str, base: float, inclusive: bool) -> float:
    from croniter import croniter
    start = datetime.fromtimestamp(base - (1.0 if inclusive else 0.0), timezone.utc).astimezone()
    it = croniter(expr, start)
    t = it.get_next(datetime).timestamp()
    while t < base or (not inclusive and t <= base):
        t = it.get_next(datetime).timestamp()
    return t


def next_run(spec: ScheduleSpec, after: float | None, created: float) -> float | None:
    """When the schedule's next run is due: its first (``after`` None), else the first later than ``after``.

    ``created`` is when the schedule was made: runs every ``every`` count from
    it (or from ``do_not_run_until``). None when no run is left.

    >>> s = ScheduleSpec("s", every="10s", do_not_run_after=125.0)
    >>> next_run(s, None, 100.0), next_run(s, 100.0, 100.0), next_run(s, 117.5, 100.0), next_run(s, 120.0, 100.0)
    (100.0, 110.0, 120.0, None)
    """
    start = max(created, spec.do_not_run_until if spec.do_not_run_until is not None else created)
    first = after is None or after < start
    if spec.every is not None:
        t = start if first else start + (math.floor((after - start) / spec.every) + 1) * spec.every
    elif spec.cron is not None:
        t = _cron_next(spec.cron, start if first else after, inclusive=first)
    else:
        t = start if first else None
    if t is not None and spec.do_not_run_after is not None and t > spec.do_not_run_after:
        return None
    return t


def _latest(spec: ScheduleSpec, due: float, now: float, created: float) -> tuple[float, int]:
    """The last run due at or before ``now``, from ``due`` on; and how many came due before it."""
    if spec.every is not None:
        k = math.floor((now - due) / spec.every)
        if spec.do_not_run_after is not None:
            k = min(k, math.floor((spec.do_not_run_after - due) / spec.every))
        return due + max(k, 0) * spec.every, max(k, 0)
    missed = 0
    while missed < _COUNT_LIMIT:
        later = next_run(spec, due, created)
        if later is None or later > now:
            return due, missed
        due, missed = later, missed + 1
    return due, missed


@dataclass(frozen=True)
class Decision:
    """What to do with a due run: ``started`` (make its job) or ``skipped`` (record why)."""

    kind: str
    due: float
    reason: str | None = None
    count: int = 1


def step(spec: ScheduleSpec, created: float, next_due: float | None, pending: float | None, now: float,
         active: int) -> tuple[float | None, float | None, list[Decision]]:
    """One look at a schedule: ``(next_due, pending, decisions)`` after ``now``.

    ``next_due`` is the next run not yet come due; ``pending`` a run that came
    due and waits for fewer than ``max_active`` of the schedule's jobs
    (``active``) to be active.
    """
    out: list[Decision] = []
    busy = f"{spec.max_active} job{'s' if spec.max_active != 1 else ''} of the schedule still active (max_active)"
    if next_due is not None and next_due <= now:
        latest, missed = _latest(spec, next_due, now, created)
        if pending is not None:
            out.append(Decision(ScheduleRunOutcome.SKIPPED.value, pending,
                                f"the next run came due before it could start: {busy}"))
        if missed:
            more = "at least " if missed >= _COUNT_LIMIT else ""
            out.append(Decision(ScheduleRunOutcome.SKIPPED.value, next_due,
                                f"{more}{missed} run{'s' if missed != 1 else ''} came due while the schedule was not "
                                "evaluated (no pool of it ran)", missed))
        pending, next_due = latest, next_run(spec, latest, created)
    if pending is not None:
        if spec.start_window is not None and now > pending + spec.start_window:
            why = busy if active >= spec.max_active else "no pool of it ran in time"
            out.append(Decision(ScheduleRunOutcome.SKIPPED.value, pending,
                                f"could not start within its start window ({timedelta(seconds=spec.start_window)}): "
                                f"{why}"))
            pending = None
        elif active < spec.max_active:
            out.append(Decision(ScheduleRunOutcome.STARTED.value, pending))
            pending = None
    return next_due, pending, out
