"""Azure's reactivate (t.reactivate, job.reactivate_failed), job.failures() and a running task's tail,
on a real local pool."""

from __future__ import annotations

import pytest

import batchnb as bnb
from waiting import wait_for


def test_reactivate_failed_resets_retries_unblocks_dependents_and_reopens_the_job(pool2, unique, tmp_path):
    side = tmp_path / "fixed"
    job = pool2.job(unique, max_task_retries=1, on_all_tasks_complete="terminate")
    a = job.add_task("a", f"test -f {side} || {{ echo missing {side} >&2; exit 3; }}")
    b = job.add_task("b", "echo after", depends_on=["a"])
    c = job.add_task("c", "echo after b", depends_on=["b"])
    first = job.wait(timeout=60, quiet=True)
    assert first.counts == {"failed": 1, "blocked": 2} and job.state == bnb.JobState.COMPLETED
    assert len(a.attempts) == 2
    # Still broken: it gets its full retry count again (2 more attempts), not one.
    assert job.reactivate_failed() == ["a"]
    assert job.state == bnb.JobState.ACTIVE and b.state in (bnb.TaskState.PENDING, bnb.TaskState.BLOCKED)
    again = job.wait(timeout=60, quiet=True)
    assert again.counts == {"failed": 1, "blocked": 2} and len(a.attempts) == 4
    side.write_text("ok")
    a.reactivate()
    done = job.wait(timeout=60, quiet=True)
    assert done.counts == {"succeeded": 3} and done.reason == "all_tasks_complete"
    assert job.state == bnb.JobState.COMPLETED
    assert [x["state"] for x in a.attempts] == ["failed"] * 4 + ["succeeded"]
    assert c.stdout().strip() == "after b" and a.failure is None and a.exit_code == 0
    assert job.reactivate_failed() == []


def test_reactivate_refuses_a_task_that_did_not_fail(pool2, unique):
    job = pool2.job(unique)
    ok = job.add_task("ok", "true")
    job.wait(timeout=60, quiet=True)
    with pytest.raises(bnb.SpecError, match="'ok'.*succeeded: only a failed task can be reactivated"):
        ok.reactivate()
    assert ok.state == bnb.TaskState.SUCCEEDED


def test_failures_group_by_exit_code_and_category_with_tails(pool2, unique):
    job = pool2.job(unique, max_task_retries=0)
    for i in range(3):
        job.add_task(f"three-{i}", f"echo out {i}; echo err {i} >&2; exit 3")
    job.add_task("four", "exit 4")
    job.add_task("fine", "true")
    job.wait(timeout=60, quiet=True)
    groups = job.failures()
    assert [(g["exit_code"], g["category"], g["count"]) for g in groups] == [(3, "exit_code", 3), (4, "exit_code", 1)]
    sample = groups[0]["tasks"][0]
    assert sample["id"] == "three-0" and sample["stdout"].strip() == "out 0" and sample["stderr"].strip() == "err 0"
    assert sample["node"] and groups[0]["message"] == "exit code 3"


def test_tail_reads_a_running_task_live(pool2, unique, tmp_path):
    stop = tmp_path / "stop"
    job = pool2.job(unique)
    t = job.add_task("talk", f"i=0; while [ ! -f {stop} ]; do i=$((i+1)); echo line $i; sleep 0.05; done")
    wait_for(lambda: t.state == bnb.TaskState.RUNNING and "line 5" in t.tail(3), 30, "live output")
    assert t.state == bnb.TaskState.RUNNING and len(t.tail(2).splitlines()) == 2
    stop.touch()
    job.wait(timeout=60, quiet=True)
    assert t.tail(1).startswith("line ")
    with pytest.raises(bnb.SpecError, match="n: -1"):
        t.tail(-1)


def test_a_resumed_job_keeps_the_retry_count_a_reactivate_reset(pool2, unique):
    """A driver that died after a reactivate: the process that resumes the job counts only the
    failures since (the task gets its full retries), not the ones before the reactivate."""
    import dataclasses
    import json
    import time

    from batchnb import spec as specs
    from batchnb.engine.ledger import Batch
    from test_api import dead_owner

    led, now = pool2.ledger, time.time()
    job_spec = specs.JobSpec(unique)
    led.create_job(unique, specs.to_dict(dataclasses.replace(job_spec, tasks=())), pool2.name, now - 10)
    task = specs.TaskSpec("a", command="exit 3", retry=bnb.Retry(max=1))
    led.add_tasks(unique, [("a", 0, json.dumps(specs.to_dict(task)), "active")], now - 10)
    batch = Batch()
    for n in (1, 2):
        batch.attempt(unique, "a", n, node="dedicated-0", state="failed", start=now - 9 + n, end=now - 8 + n,
                      exit_code=3, category="exit_code")
    batch.task(unique, "a", attempts=2)
    batch.event(now - 5, "task", unique, "a", "active", {"attempt": 2, "node": None, "reason": "reactivated"})
    led.commit(batch)
    assert led.acquire_lease(unique, dead_owner(), ttl=600) is None
    job = bnb.Job.attach(unique, pool=pool2)
    job.wait(timeout=60, quiet=True)
    a = job.task("a")
    assert a.state == bnb.TaskState.FAILED and [x["state"] for x in a.attempts] == ["failed"] * 4


def test_tasks_that_ran_added_again_read_the_jobs_reactivations_once(tmp_path):
    """A re-run notebook adds its tasks again (a no-op): those that ran are read back from the
    ledger with their retry counts, which need the job's reactivations. Read once per load, not
    once per task (3,000 such tasks took 7 s, growing with the square of their number)."""
    from batchnb.engine.ledger import Ledger
    specs = [bnb.TaskSpec(f"t{i}", "true") for i in range(40)]
    ledger = Ledger(tmp_path / "l.sqlite")
    with bnb.Pool("rerun-first", dedicated=1, ledger=ledger) as pool:
        job = pool.job("rerun")
        job.add_tasks(specs)
        assert job.wait(timeout=120, quiet=True).ok
    with bnb.Pool("rerun-again", dedicated=1, ledger=ledger) as pool:
        asked = []
        original = pool.ledger.reactivations
        pool.ledger.reactivations = lambda job_id: asked.append(job_id) or original(job_id)
        job = pool.job("rerun")
        tasks = job.add_tasks(specs)
        assert len(tasks) == 40 and job.task_counts().succeeded == 40
        assert len(asked) <= 2, f"the job's reactivations were read {len(asked)} times"   # resume, then the add
