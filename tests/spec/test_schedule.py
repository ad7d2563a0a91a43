"""Job schedules without a pool: when runs are due, what is skipped, what is refused, Azure's JSON."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import pytest

import batchnb as bnb
from batchnb.spec.schedule import ScheduleSpec, next_run, schedule_from_dict, schedule_to_dict, step


def _ts(*args) -> float:
    return datetime(*args).timestamp()


def test_cron_next_runs_in_local_time_from_when_it_was_made():
    s = ScheduleSpec("nightly", cron="0 2 * * *")
    made = _ts(2026, 3, 10, 12, 0)
    first = next_run(s, None, made)
    assert datetime.fromtimestamp(first) == datetime(2026, 3, 11, 2, 0)
    assert datetime.fromtimestamp(next_run(s, first, made)) == datetime(2026, 3, 12, 2, 0)
    # A due time exactly on the cron is the first run, not skipped over.
    assert next_run(s, None, _ts(2026, 3, 11, 2, 0)) == first
    quarter = ScheduleSpec("q", cron="*/15 9-10 * * 1-5")       # weekdays 9:00-10:45
    friday_late = _ts(2026, 3, 13, 10, 50)
    assert datetime.fromtimestamp(next_run(quarter, friday_late, 0.0)) == datetime(2026, 3, 16, 9, 0)


def test_cron_respects_do_not_run_until_and_after():
    s = ScheduleSpec("n", cron="0 2 * * *", do_not_run_until=datetime(2026, 3, 20, 3, 0),
                     do_not_run_after=datetime(2026, 3, 22, 1, 0))
    made = _ts(2026, 3, 10, 12, 0)
    first = next_run(s, None, made)
    assert datetime.fromtimestamp(first) == datetime(2026, 3, 21, 2, 0)
    assert next_run(s, first, made) is None                # the 22nd at 2:00 is after do_not_run_after


def test_every_counts_from_the_start_and_stops_after_the_end():
    s = ScheduleSpec("s", every=timedelta(seconds=2), do_not_run_after=105.0)
    assert [next_run(s, None, 100.0), next_run(s, 100.0, 100.0), next_run(s, 103.9, 100.0)] == [100.0, 102.0, 104.0]
    assert next_run(s, 104.0, 100.0) is None
    once = ScheduleSpec("once", do_not_run_until=200.0)      # Azure's schedule without recurrenceInterval
    assert next_run(once, None, 100.0) == 200.0 and next_run(once, 200.0, 100.0) is None


def test_a_due_run_starts_waits_for_max_active_and_is_skipped_after_its_window():
    s = ScheduleSpec("s", every="10s", start_window="3s", max_active=1)
    nxt, pending, out = step(s, 0.0, next_due=0.0, pending=None, now=0.5, active=0)
    assert (nxt, pending, [d.kind for d in out]) == (10.0, None, ["started"])
    nxt, pending, out = step(s, 0.0, next_due=10.0, pending=None, now=10.2, active=1)
    assert (nxt, pending, out) == (20.0, 10.0, [])              # waits: the first job is still active
    nxt, pending, out = step(s, 0.0, next_due=20.0, pending=10.0, now=12.0, active=0)
    assert (pending, [(d.kind, d.due) for d in out]) == (None, [("started", 10.0)])
    nxt, pending, out = step(s, 0.0, next_due=20.0, pending=10.0, now=13.5, active=1)
    assert pending is None and [(d.kind, d.due) for d in out] == [("skipped", 10.0)]
    assert "start window" in out[0].reason and "max_active" in out[0].reason


def test_a_run_waiting_without_a_window_is_dropped_when_the_next_comes_due():
    s = ScheduleSpec("s", every="10s", max_active=2)
    nxt, pending, out = step(s, 0.0, next_due=20.0, pending=10.0, now=20.5, active=2)
    assert (nxt, pending) == (30.0, 20.0)
    assert [(d.kind, d.due) for d in out] == [("skipped", 10.0)] and "next run came due" in out[0].reason


def test_runs_due_while_no_pool_ran_are_one_skipped_record_and_the_latest_may_start():
    s = ScheduleSpec("s", every="10s", start_window="5s")
    nxt, pending, out = step(s, 0.0, next_due=10.0, pending=None, now=1003.0, active=0)
    assert nxt == 1010.0 and pending is None
    assert [(d.kind, d.due, d.count) for d in out] == [("skipped", 10.0, 99), ("started", 1000.0, 1)]
    nxt, pending, out = step(s, 0.0, next_due=10.0, pending=None, now=1007.0, active=0)
    assert [(d.kind, d.due) for d in out] == [("skipped", 10.0), ("skipped", 1000.0)]
    assert "no pool of it ran in time" in out[1].reason


def test_no_run_left_after_do_not_run_after():
    s = ScheduleSpec("s", every="2s", do_not_run_after=5.0)
    nxt, pending, out = step(s, 0.0, next_due=4.0, pending=None, now=9.0, active=0)
    assert (nxt, pending, [(d.kind, d.due) for d in out]) == (None, None, [("started", 4.0)])


@pytest.mark.parametrize("kwargs, field", [
    ({"every": "soon"}, "every"),
    ({"every": 0}, "every"),
    ({"every": -5}, "every"),
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": 5}, "cron"),
    ({"every": "1h", "cron": "0 * * * *"}, "cron"),
    ({"every": "1h", "start_window": "whenever"}, "start_window"),
    ({"every": "1h", "start_window": 0}, "start_window"),
    ({"every": "1h", "do_not_run_until": "tomorrow"}, "do_not_run_until"),
    ({"every": "1h", "do_not_run_until": 200.0, "do_not_run_after": 100.0}, "do_not_run_after"),
    ({"every": "1h", "max_active": 0}, "max_active"),
    ({"every": "1h", "job": "nightly"}, "job"),
    ({"every": "1h", "evry": "1h"}, "evry"),
])
def test_bad_input_is_a_spec_error_naming_the_field(kwargs, field):
    with pytest.raises(bnb.SpecError) as info:
        ScheduleSpec("s", **kwargs)
    assert info.value.field == field or str(info.value).startswith(field), str(info.value)


def test_a_schedule_name_leaves_room_for_its_job_numbers():
    ScheduleSpec("x" * 50, every="1h")
    with pytest.raises(bnb.SpecError, match="schedule name.*at most 50"):
        ScheduleSpec("x" * 51, every="1h")
    with pytest.raises(bnb.SpecError, match="schedule name"):
        ScheduleSpec("no spaces", every="1h")


def test_the_ledger_form_round_trips():
    s = ScheduleSpec("n", job=bnb.JobSpec("t", max_task_retries=2, tasks=(bnb.TaskSpec("a", "echo a"),)),
                     cron="0 2 * * *", do_not_run_until="2026-01-01T00:00:00Z", start_window="1h", max_active=2)
    assert schedule_from_dict(schedule_to_dict(s)) == s


JOB_SCHEDULE_ADD = {
    "id": "nightly-report",
    "displayName": "Nightly report",
    "schedule": {"doNotRunUntil": "2026-01-01T00:00:00Z", "doNotRunAfter": "2027-01-01T00:00:00.0000000Z",
                 "startWindow": "PT1H", "recurrenceInterval": "P1D"},
    "jobSpecification": {"poolInfo": {"poolId": "reports"}, "priority": 10,
                         "constraints": {"maxWallClockTime": "PT2H", "maxTaskRetryCount": 3},
                         "onAllTasksComplete": "terminatejob"},
}


def test_from_azure_of_a_job_schedule_add_body_is_a_schedule_spec():
    spec = bnb.spec.from_azure(JOB_SCHEDULE_ADD)
    assert isinstance(spec, bnb.ScheduleSpec)
    assert (spec.id, spec.every, spec.start_window, spec.max_active) == ("nightly-report", 86400.0, 3600.0, 1)
    assert spec.do_not_run_until == datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()
    assert spec.do_not_run_after == datetime.fromisoformat("2027-01-01T00:00:00+00:00").timestamp()
    job = spec.job
    assert (job.priority, job.max_wall_clock, job.max_task_retries, job.pool) == (10, 7200.0, 3, {"name": "reports"})
    # Azure's jobs run the tasks a job manager adds; batchnb's template may carry them.
    with_tasks = bnb.spec.from_azure(JOB_SCHEDULE_ADD, tasks=[{"id": "a", "commandLine": "echo a"}])
    assert [t.id for t in with_tasks.job.tasks] == ["a"]


def test_from_azure_job_schedule_names_what_it_did_not_keep_and_refuses_bad_fields():
    body = {**JOB_SCHEDULE_ADD, "jobSpecification": {**JOB_SCHEDULE_ADD["jobSpecification"],
                                                     "jobManagerTask": {"id": "m", "commandLine": "run"}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnb.spec.from_azure(body)
    assert any("jobManagerTask" in str(w.message) for w in caught)
    bad = {**JOB_SCHEDULE_ADD, "schedule": {"recurrenceInterval": "every day"}}
    with pytest.raises(bnb.SpecError, match=r"schedule\.recurrenceInterval"):
        bnb.spec.from_azure(bad)
    no_recurrence = bnb.spec.from_azure({**JOB_SCHEDULE_ADD, "schedule": {}})
    assert no_recurrence.every is None and no_recurrence.cron is None     # one run, as Azure's
