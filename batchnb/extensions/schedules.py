"""Job schedules while a pool runs: each due run makes a job (Azure's JobSchedule).

The schedules live in the ledger (:mod:`batchnb.engine.ledger_schedules`),
each bound to a pool by name; this extension evaluates its own pool's on
the dispatcher's timer, with the pure decisions of
:mod:`batchnb.spec.schedule`. It runs wherever the pool's engine runs: in
the kernel, or in a detached pool's agent, where schedules fire with no
notebook open (and keep the agent from stopping for idleness). A pool made
again with the same name and ledger picks its schedules up where they were.

Each started run makes the job ``<schedule>-job-<n>`` (Azure's
``<schedule>:job-<n>``; a batchnb id holds no ``:``) from the schedule's
job template and its builder function's tasks, all at once. The job ends
when its tasks have (``on_all_tasks_complete="terminate"``): a scheduled job
has no one to end it, and an active one holds the schedule's ``max_active``.
A run whose builder raises, or that would have no task, makes no job and is
recorded ``failed`` with the reason; a run that cannot start in its start
window is recorded ``skipped``.

The ledger is read again on every look (once a second at most, and when a
run comes due or one of the schedules' jobs ends), so a schedule made,
disabled or deleted from another process is seen.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time

from ..engine import auditops
from ..engine.extension import PoolExtension
from ..errors import SpecError, shorten
from ..spec.schedule import job_id, next_run, schedule_from_dict, step
from ..states import ScheduleRunOutcome, ScheduleState
from .jobdraft import JobDraft

log = logging.getLogger("batchnb.schedules")

#: The longest wait between two looks at the ledger's schedules.
LOOK_EVERY = 1.0


class SchedulesExtension(PoolExtension):
    """Makes the jobs of the pool's schedules when they come due; records skipped and failed runs."""

    def __init__(self, engine):
        super().__init__(engine)
        self._stopped = False
        self._building: set[str] = set()      # schedules whose run's job is being made (off the dispatcher)

    # -- the timer -----------------------------------------------------------------
    def start(self) -> None:
        # Timers belong to the dispatcher's thread: armed from there.
        self.engine.dispatcher.post(self._tick)

    def stop(self) -> None:
        self._stopped = True

    def _tick(self) -> None:
        if self._stopped or self.engine.closed:
            return
        wake = time.time() + LOOK_EVERY
        try:
            wake = min(wake, self.look())
        finally:
            self.engine.dispatcher.at(max(wake, time.time() + 0.05), self._tick)

    def job_ended(self, job, now: float) -> None:
        # A run waiting for max_active may start now: looked at after this turn's commit, so
        # that the ledger shows the job completed.
        self.engine.dispatcher.post(self.look)

    def keeps_alive(self) -> bool:
        """An active schedule of this pool has runs to come: a detached agent does not stop for idleness."""
        return any(r["state"] == ScheduleState.ACTIVE.value for r in self.engine.ledger.schedules(self.engine.name))

    # -- one look ------------------------------------------------------------------
    def look(self) -> float:
        """Start, skip or wait each due run of this pool's active schedules; return when to look next."""
        ledger, now = self.engine.ledger, time.time()
        wake = now + LOOK_EVERY
        for row in ledger.schedules(self.engine.name):
            name = row["name"]
            if row["state"] != ScheduleState.ACTIVE.value or name.lower() in self._building:
                continue
            try:
                wake = min(wake, self._look_at(row, now))
            except Exception:  # noqa: BLE001 - one schedule's trouble must not stop the others
                log.exception("batchnb: schedule %s of pool %s could not be evaluated", name, self.engine.name)
        return wake

    def _look_at(self, row: dict, now: float) -> float:
        ledger, name = self.engine.ledger, row["name"]
        spec = schedule_from_dict(json.loads(row["spec"]))
        active = ledger.schedule_active_jobs(name)
        self._resume(active)
        next_due, pending, decisions = step(spec, row["created"], row["next_due"], row["pending"], now, len(active))
        start = None
        for d in decisions:
            if d.kind == ScheduleRunOutcome.SKIPPED.value:
                log.warning("batchnb: schedule %s skipped the run due at %s: %s", name, _shown(d.due), d.reason)
                ledger.schedule_run(name, d.due, now, d.kind, reason=d.reason, count=d.count,
                                    next_due=next_due, pending=pending)
            else:
                start = d.due
        if (next_due, pending) != (row["next_due"], row["pending"]):
            ledger.update_schedule(name, next_due=next_due, pending=pending)
        if start is not None:
            self._building.add(name.lower())
            jid = job_id(name, row["started"] + 1)
            threading.Thread(target=self._make, args=(name, spec, row["builder"], start, jid), daemon=True,
                             name=f"batchnb-schedule-{name}").start()
        elif next_due is None and pending is None and not active:
            ledger.update_schedule(name, state=ScheduleState.COMPLETED.value)
            log.info("batchnb: schedule %s of pool %s has completed", name, self.engine.name)
        return next_due if next_due is not None else now + LOOK_EVERY

    def _resume(self, active: list[str]) -> None:
        """Take up the schedule's jobs that a closed pool (or a dead agent) left active: they hold its
        ``max_active``, and nothing else would end them. A job another live process holds stays there."""
        disp, ledger = self.engine.dispatcher, self.engine.ledger
        for jid in active:
            if jid.lower() in disp.jobs:
                continue
            if ledger.acquire_lease(jid, self.engine.owner, self.engine.lease_ttl) is None:
                log.info("batchnb: pool %s resumes job %s of its schedule", self.engine.name, jid)
                disp.resume_job(ledger.job(jid), self.engine.owner)

    # -- making a run's job (off the dispatcher's thread: a builder may take its time) ---------------
    def _make(self, name: str, spec, builder: bytes | None, due: float, jid: str) -> None:
        ledger, disp = self.engine.ledger, self.engine.dispatcher
        outcome, reason = ScheduleRunOutcome.STARTED.value, None
        try:
            template = spec.template()
            tasks = list(template.tasks)
            if builder is not None:
                import cloudpickle
                draft = JobDraft(jid)
                cloudpickle.loads(builder)(draft)
                tasks += draft.tasks
            if not tasks:
                raise SpecError("schedule", name, "the run's job would have no task: give the schedule a job "
                                                  "with tasks, or a builder that adds some")
            jspec = dataclasses.replace(template, id=jid, tasks=(), on_all_tasks_complete="terminate")

            def create():
                row = ledger.schedule(name)
                if row is None or row["state"] != ScheduleState.ACTIVE.value:
                    raise SpecError("schedule", name, f"is {row['state'] if row else 'deleted'} now")
                if ledger.job(jid) is not None:
                    raise SpecError("job id", jid, "is taken by a job the schedule did not make")
                run = disp.create_job(jspec, self.engine.owner)
                try:
                    disp.add_tasks(run.key, tasks)
                except BaseException as exc:
                    disp.terminate(run, f"its schedule's run failed: {exc}", time.time())
                    raise
            disp.call(create, timeout=None)
            log.info("batchnb: schedule %s made job %s (due %s)", name, jid, _shown(due))
        except Exception as exc:  # noqa: BLE001 - the builder's own error, recorded with the run
            outcome, reason = ScheduleRunOutcome.FAILED.value, f"{type(exc).__name__}: {shorten(str(exc))}"
            log.warning("batchnb: schedule %s could not make its run's job %s: %s", name, jid, reason)
        finally:
            try:
                if ledger.schedule(name) is not None:
                    ledger.schedule_run(name, due, time.time(), outcome,
                                        job_id=jid if outcome == ScheduleRunOutcome.STARTED.value else None,
                                        reason=reason)
            finally:
                self._building.discard(name.lower())
                if not self.engine.closed:
                    disp.post(self.look)

    # -- what the Schedule handle asks (any thread; a detached pool's client, through its agent) ----
    @auditops.schedule_create
    def add(self, data: dict, builder: bytes | None) -> None:
        """Record a new schedule of this pool (``data``: a ScheduleSpec's dict) and look at it at once."""
        spec = schedule_from_dict(data)
        now = time.time()
        self.engine.ledger.create_schedule(spec.id, self.engine.name, data, builder, now, next_run(spec, None, now))
        self._poke()

    def replace_builder(self, name: str, builder: bytes | None) -> None:
        self.engine.ledger.update_schedule(name, builder=builder)

    @auditops.schedule_disable
    def disable(self, name: str) -> None:
        row = self._row(name)
        if row["state"] in (ScheduleState.ACTIVE.value, ScheduleState.DISABLED.value):
            self.engine.ledger.update_schedule(name, state=ScheduleState.DISABLED.value, pending=None)

    @auditops.schedule_enable
    def enable(self, name: str) -> None:
        """Runs are due again from the next recurrence on (none is made up for the time it was disabled)."""
        row = self._row(name)
        if row["state"] == ScheduleState.COMPLETED.value:
            raise SpecError("schedule", name, "has completed (no run is left); make a new schedule")
        if row["state"] == ScheduleState.DISABLED.value:
            spec = schedule_from_dict(json.loads(row["spec"]))
            self.engine.ledger.update_schedule(name, state=ScheduleState.ACTIVE.value, pending=None,
                                               next_due=next_run(spec, time.time(), row["created"]))
            self._poke()

    @auditops.schedule_delete
    def delete(self, name: str) -> None:
        """Terminate the schedule's active jobs, then forget it (its jobs stay in the ledger)."""
        from ..engine.offline import terminate_job
        self._row(name)
        ledger, disp = self.engine.ledger, self.engine.dispatcher
        ledger.update_schedule(name, state=ScheduleState.DELETING.value, pending=None)
        reason = f"its schedule {name} was deleted"
        for jid in ledger.schedule_active_jobs(name):
            run = disp.call(lambda key=jid.lower(): disp.jobs.get(key))
            if run is not None:
                disp.call(disp.terminate, run, reason, time.time(), timeout=None)
            else:
                terminate_job(jid, ledger, reason)
        ledger.delete_schedule(name)

    def _row(self, name: str) -> dict:
        row = self.engine.ledger.schedule(name)
        if row is None or row["pool"] != self.engine.name:
            raise SpecError("schedule", name, f"pool {self.engine.name!r} has no schedule of this name "
                                              "(pool.schedules() lists them)")
        return row

    def _poke(self) -> None:
        if not self.engine.closed:
            self.engine.dispatcher.post(self.look)


def _shown(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
