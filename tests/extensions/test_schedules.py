"""Job schedules on real local pools: runs fire and stop, windows skip, disable/enable/delete, and a
schedule kept in the ledger comes back with its pool."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import batchnb as bnb
from pools import temporary_pool
from waiting import wait_for


@pytest.fixture(scope="module")
def pool():
    with temporary_pool("sched", dedicated=2) as p:
        yield p


@pytest.fixture
def cleanup(pool):
    yield
    for s in pool.schedules():       # an active schedule left behind would fire into the next test
        s.delete()


def _outcomes(sched) -> list[str]:
    return [r.outcome for r in sched.runs()]


def test_every_two_seconds_fires_three_runs_and_stops_at_do_not_run_after(pool, cleanup):
    def build(job):
        job.add_task("hello", "echo run of $AZ_BATCH_JOB_ID")
        job.submit(pow, 2, 10, task_id="pow")
    start = time.time()
    sched = pool.schedule("every2", build, every="2s",
                          do_not_run_after=datetime.now() + timedelta(seconds=5))
    assert sched.state == bnb.ScheduleState.ACTIVE
    results = sched.wait(timeout=60)
    assert [(r.job_id, r.counts) for r in results] == [(f"every2-job-{n}", {"succeeded": 2}) for n in (1, 2, 3)]
    assert sched.state == bnb.ScheduleState.COMPLETED
    runs = sched.runs()
    assert [r.outcome for r in runs] == ["started"] * 3
    assert [r.job_id for r in runs] == ["every2-job-1", "every2-job-2", "every2-job-3"]
    dues = [r.due.timestamp() for r in runs]
    assert all(abs(b - a - 2.0) < 1e-6 for a, b in zip(dues, dues[1:])) and dues[0] >= start - 1
    jobs = sched.jobs()
    assert [j.id for j in jobs] == [r.job_id for r in runs]
    for job in jobs:
        assert job.state == bnb.JobState.COMPLETED
        assert job.result().counts == {"succeeded": 2}
    assert jobs[1].task("hello").stdout().strip() == "run of every2-job-2"
    assert jobs[2].task("pow").result() == 1024
    assert sched.next_run is None
    assert [s.name for s in pool.schedules()] == ["every2"]


def test_a_run_that_cannot_start_in_its_window_is_recorded_as_skipped(pool, cleanup):
    # The first run's job sleeps past the second's due time and its 0.5 s window: max_active=1.
    sched = pool.schedule("window", lambda job: job.add_task("slow", "sleep 3"), every="2s", start_window="0.5s",
                          do_not_run_after=datetime.now() + timedelta(seconds=3))
    wait_for(lambda: sched.state == bnb.ScheduleState.COMPLETED, 60, "the schedule to complete")
    runs = sched.runs()
    assert [r.outcome for r in runs] == ["started", "skipped"]
    assert runs[1].job_id is None and "start window" in runs[1].reason and "max_active" in runs[1].reason
    assert [j.id for j in sched.jobs()] == ["window-job-1"]


def test_max_active_lets_runs_overlap(pool, cleanup):
    sched = pool.schedule("overlap", lambda job: job.add_task("slow", "sleep 3"), every="1s", start_window="0.5s",
                          max_active=2, do_not_run_after=datetime.now() + timedelta(seconds=1.5))
    wait_for(lambda: sched.state == bnb.ScheduleState.COMPLETED, 60, "the schedule to complete")
    assert _outcomes(sched) == ["started", "started"]


def test_disable_stops_firing_and_enable_resumes(pool, cleanup):
    sched = pool.schedule("toggle", lambda job: job.add_task("t", "true"), every="1s")
    wait_for(lambda: len(sched.runs()) >= 1, 30, "a first run")
    sched.disable()
    assert sched.state == bnb.ScheduleState.DISABLED
    disabled_at, made = time.time(), len(sched.runs())
    # Nothing may happen here, so the wait is for time itself: three due times pass.
    wait_for(lambda: time.time() > disabled_at + 3, 10, "three due times to pass")
    assert len(sched.runs()) <= made + 1        # at most the run being made as it was disabled
    quiet = len(sched.runs())
    sched.enable()
    assert sched.state == bnb.ScheduleState.ACTIVE
    wait_for(lambda: len(sched.runs()) > quiet, 30, "a run after enable")
    after = sched.runs()[quiet:]
    assert after[0].outcome == "started" and after[0].due.timestamp() > disabled_at + 3
    assert all(r.outcome == "started" for r in sched.runs())     # the disabled time is not made up


def test_delete_terminates_its_active_jobs_and_forgets_the_schedule(pool, cleanup):
    sched = pool.schedule("doomed", lambda job: job.add_task("long", "sleep 60"), every="1h")
    wait_for(lambda: sched.jobs() and sched.jobs()[0].task("long").state == bnb.TaskState.RUNNING, 30,
             "the first run's task to run")
    job_id = sched.runs()[0].job_id
    sched.delete()
    assert pool.schedules() == [] and pool.ledger.schedule("doomed") is None
    with pytest.raises(bnb.SpecError, match="no schedule of this name"):
        sched.state
    job = bnb.Job.attach(job_id, ledger=pool.ledger)
    assert job.state == bnb.JobState.COMPLETED and "doomed was deleted" in job.result().reason
    # The name is free again; the jobs of the old schedule keep their ids.
    again = pool.schedule("doomed", lambda job: job.add_task("t", "true"), every="1h")
    wait_for(lambda: again.runs(), 30, "the new schedule's first run")
    assert again.runs()[0].job_id == "doomed-job-2"


def test_a_builder_that_raises_or_adds_nothing_is_a_failed_run(pool, cleanup):
    def broken(job):
        raise RuntimeError("no data for today")
    sched = pool.schedule("broken", broken, every="1h")
    wait_for(lambda: sched.runs(), 30, "the run to be recorded")
    run = sched.runs()[0]
    assert (run.outcome, run.job_id) == ("failed", None) and "no data for today" in run.reason
    empty = pool.schedule("empty", lambda job: None, every="1h")
    wait_for(lambda: empty.runs(), 30, "the run to be recorded")
    assert empty.runs()[0].outcome == "failed" and "no task" in empty.runs()[0].reason


def test_a_job_spec_template_runs_its_tasks(pool, cleanup):
    template = bnb.JobSpec("tpl", max_task_retries=1, tasks=(bnb.TaskSpec("a", "echo A"),
                                                             bnb.TaskSpec("b", "echo B", depends_on=["a"])))
    sched = pool.schedule("tpl", template, every="1h")
    wait_for(lambda: sched.jobs() and sched.jobs()[0].state == bnb.JobState.COMPLETED, 60, "the run's job")
    job = sched.jobs()[0]
    assert job.id == "tpl-job-1" and job.result().counts == {"succeeded": 2}


def test_pool_schedule_refuses_bad_input_at_the_call(pool, cleanup):
    build = lambda job: job.add_task("t", "true")      # noqa: E731
    with pytest.raises(bnb.SpecError, match=r"^every: None is invalid: give every="):
        pool.schedule("bad", build)
    with pytest.raises(bnb.SpecError, match="^cron: "):
        pool.schedule("bad", build, every="1h", cron="0 * * * *")
    with pytest.raises(bnb.SpecError, match="^every: 'often'"):
        pool.schedule("bad", build, every="often")
    with pytest.raises(bnb.SpecError, match="^cron: 'at two'"):
        pool.schedule("bad", build, cron="at two")
    with pytest.raises(bnb.SpecError, match="^start_window: "):
        pool.schedule("bad", build, every="1h", start_window="-1s")
    with pytest.raises(bnb.SpecError, match="^spec_or_builder: .*one argument"):
        pool.schedule("bad", lambda: None, every="1h")
    with pytest.raises(bnb.SpecError, match="^spec_or_builder: "):
        pool.schedule("bad", "echo hi", every="1h")
    with pytest.raises(bnb.SpecError, match="no schedule of this name"):
        pool.schedule("bad")
    assert pool.schedules() == []


def test_a_closed_pool_takes_no_schedule(tmp_path):
    with bnb.Pool("shut", dedicated=0, ledger=bnb.Ledger(tmp_path / "ledger.sqlite")) as pool:
        pass
    with pytest.raises(bnb.SpecError, match="^pool: 'shut' is invalid: is closed"):
        pool.schedule("late", lambda job: None, every="1h")
    assert pool.ledger.schedules() == []


def test_wait_on_a_schedule_that_runs_on_times_out(pool, cleanup):
    sched = pool.schedule("forever", lambda job: job.add_task("t", "true"), every="1h")
    with pytest.raises(bnb.WaitTimeout, match="forever.*did not complete within 0.3s: it is active"):
        sched.wait(timeout=0.3)


def test_the_same_schedule_made_again_is_the_one_there(pool, cleanup):
    build = lambda job: job.add_task("t", "true")      # noqa: E731
    first = pool.schedule("rerun", build, every="1h")
    again = pool.schedule("rerun", build, every="1h")
    assert again.name == first.name and len(pool.schedules()) == 1
    with pytest.raises(bnb.SpecError, match="exists"):
        pool.schedule("rerun", build, every="2h")
    assert pool.schedule("rerun").spec.every == 3600.0


def test_a_schedule_survives_making_the_pool_again_with_the_same_ledger(tmp_path: Path):
    ledger = bnb.Ledger(tmp_path / "ledger.sqlite")
    with bnb.Pool("keeper", dedicated=1, ledger=ledger) as pool:
        sched = pool.schedule("beat", lambda job: job.add_task("t", "echo beat"), every="1s")
        wait_for(lambda: "started" in _outcomes(sched), 30, "a first run")
    closed_at = time.time()
    time.sleep(2.5)   # the scenario itself: runs fall due (every 1 s) while no pool runs the schedule
    seen = len(bnb.Ledger(tmp_path / "ledger.sqlite").schedule_runs("beat"))
    with bnb.Pool("keeper", dedicated=1, ledger=bnb.Ledger(tmp_path / "ledger.sqlite")) as pool:
        [sched] = pool.schedules()
        assert sched.name == "beat" and sched.state == bnb.ScheduleState.ACTIVE
        wait_for(lambda: any(r.outcome == "started" and r.time.timestamp() > closed_at for r in sched.runs()),
                 30, "a run made by the pool made again")
        later = sched.runs()[seen:]
        # The runs due while no pool ran it are one skipped record; the job numbers go on.
        skipped = [r for r in later if r.outcome == "skipped"]
        assert skipped and "not evaluated" in skipped[0].reason and skipped[0].count >= 1
        started = [r.job_id for r in sched.runs() if r.outcome == "started"]
        assert started == [f"beat-job-{n}" for n in range(1, len(started) + 1)] and len(started) >= 2
        sched.delete()
