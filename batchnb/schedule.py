"""``pool.schedule(...)``: job schedules (Azure's JobSchedule) and the :class:`Schedule` handle.

A schedule makes a job whenever a run comes due (``every=`` or ``cron=``,
between ``do_not_run_until`` and ``do_not_run_after``), from a job template
(a :class:`bnb.JobSpec <batchnb.JobSpec>` with tasks) or a builder function
that adds the tasks. It lives in the ledger and runs in the pool's engine
(:mod:`batchnb.extensions.schedules`): in this kernel, or in a detached
pool's agent, where it fires with no notebook open. The decisions (when a
run is due, when one is skipped) are in :mod:`batchnb.spec.schedule`.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from .errors import SpecError, WaitTimeout
from .extensions.schedules import SchedulesExtension
from .job import Job
from .result import JobResult
from .spec.model import JobSpec
from .spec.schedule import ScheduleSpec, schedule_from_dict, schedule_to_dict
from .states import JobState, ScheduleState

if TYPE_CHECKING:
    import batchnb

_OPTIONS = ("every", "cron", "do_not_run_until", "do_not_run_after", "start_window", "max_active")


@dataclass(frozen=True)
class ScheduleRun:
    """One due run of a schedule, as the ledger recorded it.

    ``outcome`` is ``started`` (``job_id`` made), ``skipped`` (``reason``; ``count``
    runs at once when several came due while no pool ran the schedule) or
    ``failed`` (its builder raised, or its job was refused: ``reason``).

    >>> ScheduleRun(1, datetime(2026, 1, 1, 2), datetime(2026, 1, 1, 2), "started", "nightly-job-1").job_id
    'nightly-job-1'
    """

    seq: int
    due: datetime
    time: datetime
    outcome: str
    job_id: str | None = None
    reason: str | None = None
    count: int = 1


class Schedule:
    """A job schedule of a pool: ``pool.schedule(name, ...)`` makes one, ``pool.schedules()`` lists them.

    Its state (``active``, ``disabled``, ``completed``, ``deleting``), its
    runs and the jobs they made are read from the ledger.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1) as pool:
    ...     sched = pool.schedule("hourly", lambda job: job.add_task("t", "echo hi"), every="1h",
    ...                           do_not_run_until="2099-01-01T00:00:00Z")
    ...     print(sched.state, sched.next_run.year)
    ...     sched.disable()
    ...     print(sched.state, [s.name for s in pool.schedules()])
    ...     sched.delete()
    ...     print(pool.schedules())
    active 2099
    disabled ['hourly']
    []
    """

    def __init__(self, pool: batchnb.Pool, name: str):
        self.pool = pool
        self.name = name

    def _row(self) -> dict:
        row = self.pool.ledger.schedule(self.name)
        if row is None or row["pool"] != self.pool.name:
            raise SpecError("schedule", self.name, f"pool {self.pool.name!r} has no schedule of this name (deleted?)")
        return row

    @property
    def spec(self) -> ScheduleSpec:
        return schedule_from_dict(json.loads(self._row()["spec"]))

    @property
    def state(self) -> ScheduleState:
        return ScheduleState(self._row()["state"])

    @property
    def next_run(self) -> datetime | None:
        """When the next run is due (local time); None when no run is left."""
        row = self._row()
        due = row["pending"] if row["pending"] is not None else row["next_due"]
        return None if due is None else datetime.fromtimestamp(due)

    def runs(self) -> list[ScheduleRun]:
        """Every due run so far: started, skipped or failed, in order."""
        return [ScheduleRun(r["seq"], datetime.fromtimestamp(r["due"]), datetime.fromtimestamp(r["time"]),
                            r["outcome"], r["job_id"], r["reason"], r["count"])
                for r in self.pool.ledger.schedule_runs(self._row()["name"])]

    def jobs(self) -> list[Job]:
        """The jobs the schedule's runs made, oldest first: live handles while they run, read back
        from the ledger once they completed."""
        out = []
        for r in self.runs():
            if r.job_id is None:
                continue
            row = self.pool.ledger.job(r.job_id)
            if row is None:
                continue
            if row["state"] != JobState.COMPLETED.value and not self.pool._closed:
                out.append(self.pool.job(r.job_id))
            else:
                out.append(Job.attach(r.job_id, ledger=self.pool.ledger))
        return out

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        """Block until the schedule has completed (no run left, and its jobs ended); return its jobs'
        results. A schedule with no ``do_not_run_after`` runs on: give a ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state != ScheduleState.COMPLETED:
            if self.pool._closed:
                raise WaitTimeout(f"the pool of schedule {self.name!r} was closed before the schedule completed")
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"schedule {self.name!r} did not complete within {timeout}s: it is "
                                  f"{self.state.value}, next run {self.next_run}")
            time.sleep(0.2)     # the ledger is the truth, and another process (an agent) may write it
        return [job.result() for job in self.jobs()]

    def disable(self) -> None:
        """Make no job until :meth:`enable`; runs due meanwhile are not made up."""
        self._extension().disable(self.name)

    def enable(self) -> None:
        """Make jobs again, from the next recurrence on."""
        self._extension().enable(self.name)

    def delete(self) -> None:
        """Terminate the schedule's active jobs and forget the schedule and its runs (the jobs
        stay in the ledger: ``bnb.jobs()``, ``bnb.Job.attach``)."""
        self._extension().delete(self.name)

    def _extension(self):
        if self.pool._closed:
            raise SpecError("pool", self.pool.name, "is closed; make it again (same name and ledger) to change "
                                                    "its schedules")
        return self.pool.extension(SchedulesExtension)

    def __repr__(self) -> str:
        try:
            return f"<batchnb.Schedule {self.name!r} of pool {self.pool.name!r}: {self.state.value}>"
        except SpecError:
            return f"<batchnb.Schedule {self.name!r} of pool {self.pool.name!r}: deleted>"


def make_schedule(pool: batchnb.Pool, name: str, spec_or_builder: Any, options: dict) -> Schedule:
    """``pool.schedule(...)``: check everything here, record the schedule in the pool's engine."""
    import cloudpickle
    if pool._closed:
        raise SpecError("pool", pool.name, "is closed; make it again (same name and ledger) to schedule on it")
    given = {k: v for k, v in options.items() if k in _OPTIONS and (v is not None or k == "max_active")}
    if options.get("max_active", 1) == 1:
        given.pop("max_active", None)
    builder = None
    if isinstance(spec_or_builder, ScheduleSpec):
        spec = spec_or_builder.with_(id=name, **given)
    elif spec_or_builder is None or isinstance(spec_or_builder, JobSpec) or callable(spec_or_builder):
        if "every" not in given and "cron" not in given:
            if spec_or_builder is None:
                return _existing(pool, name)
            raise SpecError("every", None, "give every= (a duration such as '1d') or cron= (such as '0 2 * * *')")
        job = spec_or_builder if isinstance(spec_or_builder, JobSpec) else None
        if callable(spec_or_builder) and not isinstance(spec_or_builder, JobSpec):
            _check_builder(spec_or_builder)
            try:
                builder = cloudpickle.dumps(spec_or_builder)
            except Exception as exc:  # noqa: BLE001 - whatever pickling raises, say what could not travel
                raise SpecError("spec_or_builder", spec_or_builder, f"cannot be pickled: {exc}") from None
        spec = ScheduleSpec(name, job=job, **given)
    else:
        raise SpecError("spec_or_builder", spec_or_builder, "expected a bnb.JobSpec (each run's job), a "
                                                            "callable(job) that adds tasks, or a bnb.ScheduleSpec")
    data = schedule_to_dict(spec)
    row = pool.ledger.schedule(spec.id)
    if row is not None and row["pool"] == pool.name and json.loads(row["spec"]) == data:
        # A re-run notebook makes the same schedule again: it is the one there (with the builder given now).
        if builder is not None:
            pool.extension(SchedulesExtension).replace_builder(row["name"], builder)
        return Schedule(pool, row["name"])
    pool.extension(SchedulesExtension).add(data, builder)
    return Schedule(pool, spec.id)


def _existing(pool: batchnb.Pool, name: str) -> Schedule:
    row = pool.ledger.schedule(name)
    if row is None or row["pool"] != pool.name:
        raise SpecError("schedule", name, f"pool {pool.name!r} has no schedule of this name; give a JobSpec or a "
                                          "builder, and every= or cron=, to make one")
    return Schedule(pool, row["name"])


def _check_builder(fn: Callable) -> None:
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise SpecError("spec_or_builder", fn, "a builder is called with one argument, the run's job "
                                               "(def build(job): job.add_task(...))") from None
    except ValueError:      # no signature to read (a builtin): called as it is
        pass


def pool_schedules(pool: batchnb.Pool) -> list[Schedule]:
    """``pool.schedules()``: the pool's schedules, oldest first."""
    return [Schedule(pool, r["name"]) for r in pool.ledger.schedules(pool.name)]
