"""bnb.jobs(), bnb.prune(), retention_time, and ending a job no process drives."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import batchnb as bnb
from batchnb.engine.ledger import Ledger

DAY = 86400.0


def wait_until(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def dead_owner() -> str:
    import socket
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:0"


def fake_job(led: Ledger, job_id: str, root: Path, *, ended_days_ago: float, states=("succeeded",),
             retention=None) -> list[Path]:
    """A job as a dead driver leaves it: rows and task directories on disk."""
    t0 = time.time() - ended_days_ago * DAY
    led.create_job(job_id, {"id": job_id}, "p", now=t0 - 60)
    dirs = []
    for i, state in enumerate(states):
        spec = {"id": f"t{i}", "command": "true", **({"retention_time": retention} if retention is not None else {})}
        led.add_tasks(job_id, [(f"t{i}", i, json.dumps(spec), state)], now=t0 - 60)
        d = root / "nodes" / "p" / "dedicated-0" / "workitems" / job_id / f"t{i}" / "1"
        (d / "wd").mkdir(parents=True)
        (d / "stdout.txt").write_text("hello")
        dirs.append(d)
        with led._tx() as con:
            con.execute("INSERT INTO attempts(job_id, task_id, n, state, task_dir, stdout_tail) VALUES (?,?,?,?,?,?)",
                        (job_id, f"t{i}", 1, "running" if state == "running" else state, str(d), "hello"))
            con.execute("UPDATE tasks SET ended = ?, attempts = 1 WHERE job_id = ? AND id = ?",
                        (None if state in ("running", "active", "pending") else t0, job_id, f"t{i}"))
    return dirs


def test_prune_removes_old_finished_jobs_only(ledger, tmp_path):
    old = fake_job(ledger, "old", tmp_path, ended_days_ago=8)
    recent = fake_job(ledger, "recent", tmp_path, ended_days_ago=6)
    unfinished = fake_job(ledger, "unfinished", tmp_path, ended_days_ago=30, states=("succeeded", "active"))
    ledger.create_job("leased", {"id": "leased"}, "p", now=time.time() - 30 * DAY)
    assert ledger.acquire_lease("leased", "elsewhere:1:x", ttl=60) is None     # a live holder elsewhere
    outside = tmp_path / "precious"
    outside.mkdir()
    with ledger._tx() as con:   # a ledger that points outside a task directory is never obeyed
        con.execute("UPDATE attempts SET task_dir = ? WHERE job_id = 'old'", (str(outside),))
    assert bnb.prune(older_than="7d", ledger=ledger, dry_run=True) == ["old"]
    assert ledger.job("old") is not None
    assert bnb.prune(older_than="7d", ledger=ledger) == ["old"]
    assert ledger.job("old") is None and ledger.tasks("old") == [] and ledger.attempts("old") == []
    assert outside.exists() and old[0].exists()
    assert all(d.exists() for d in recent + unfinished[1:])
    assert not unfinished[0].exists()     # its task ended 30 days ago: past Azure's default retention, 7 days
    assert {j["id"] for j in bnb.jobs(ledger)} == {"recent", "unfinished", "leased"}
    assert ledger.last_audit("old", "prune") is not None
    # Everything finished goes with older_than=0; a leased or unfinished job never does.
    assert bnb.prune(older_than=0, ledger=ledger) == ["recent"]
    assert not recent[0].exists() and not recent[0].parent.parent.exists()   # empty <job>/ folder too
    with pytest.raises(bnb.SpecError, match="older_than"):
        bnb.prune(older_than="a week", ledger=ledger)


def test_prune_applies_retention_time_of_tasks(ledger, tmp_path):
    dirs = fake_job(ledger, "r", tmp_path, ended_days_ago=0.5, states=("succeeded", "failed", "succeeded"),
                    retention=3600)
    with ledger._tx() as con:
        con.execute("UPDATE tasks SET spec = ? WHERE job_id = 'r' AND id = 't2'", (json.dumps({"id": "t2", "command": "x"}),))
    assert bnb.prune(older_than="7d", ledger=ledger) == []
    assert [d.exists() for d in dirs] == [False, False, True]
    assert [a["task_dir"] for a in ledger.attempts("r")][:2] == [None, None]
    job = bnb.Job.attach("r", ledger=ledger)
    assert job.task("t0").stdout() == "hello"      # from the recorded tail once the folder is gone


def test_retention_time_in_a_live_pool(pool2, unique):
    job = pool2.job(unique)
    keep = job.add_task("keep", "echo kept")
    gone = job.add_task("gone", "echo gone", retention_time="0.3s")
    job.wait(timeout=30, quiet=True)
    gone_dir = Path(gone.attempts[0]["task_dir"] or "")
    wait_until(lambda: gone.attempts[0]["task_dir"] is None)
    assert not gone_dir.exists() and gone.stdout().strip() == "gone"
    assert Path(keep.attempts[0]["task_dir"]).exists()


def test_prune_leaves_jobs_a_live_pool_dispatches(pool2, unique):
    done = pool2.job(unique + "-done", on_all_tasks_complete="terminate")
    done.add_task("a", "echo a")      # something in its folder: a folder of nothing is not kept
    done.wait(timeout=30, quiet=True)
    open_ = pool2.job(unique + "-open")      # noaction: may still get tasks, and its driver lives
    open_.add_task("a", "true")
    open_.wait(timeout=30, quiet=True)
    task_dir = Path(done.task("a").attempts[0]["task_dir"])
    assert task_dir.exists()
    pruned = bnb.prune(older_than=0, ledger=pool2.ledger)
    assert unique + "-done" in pruned and unique + "-open" not in pruned
    assert not task_dir.exists() and pool2.ledger.job(unique + "-open") is not None


def test_terminate_a_job_no_process_drives(ledger, tmp_path):
    fake_job(ledger, "orphan", tmp_path, ended_days_ago=0, states=("succeeded", "running", "active", "pending"))
    assert ledger.acquire_lease("orphan", dead_owner(), ttl=600) is None
    job = bnb.Job.attach("orphan", ledger=ledger)      # read-only: asks the ledger to end it
    job.terminate()
    assert job.state == bnb.JobState.COMPLETED
    assert {t.id: t.state for t in job.tasks()} == {"t0": "succeeded", "t1": "cancelled", "t2": "cancelled",
                                                    "t3": "cancelled"}
    assert ledger.attempts("orphan", "t1")[0]["state"] == "terminated"
    assert ledger.job("orphan")["reason"] == "terminated" and ledger.lease("orphan") is None
    assert job.result().reason == "terminated"
    with pytest.raises(bnb.SpecError, match="not in the ledger"):
        bnb.Job.attach("nobody", ledger=ledger)


def test_adding_a_task_again_is_a_no_op_unless_it_differs(pool2, unique, tmp_path):
    out = tmp_path / "ran.txt"
    job = pool2.job(unique)
    first = job.add_task("a", f"echo a >> {out}", env={"K": "1"})
    job.wait(timeout=30, quiet=True)
    same = job.add_task("a", f"echo a >> {out}", env={"K": "1"})          # equal spec: nothing new
    assert same.task_id == first.task_id and len(same.attempts) == 1
    with pytest.raises(bnb.SpecError, match=r"different spec \(fields differ: env\).*replace=True"):
        job.add_task("a", f"echo a >> {out}", env={"K": "2"})
    job.add_task("a", f"echo a >> {out}", env={"K": "2"}, replace=True)
    job.wait(timeout=30, quiet=True)
    assert out.read_text().split() == ["a", "a"] and job.task("a").state == bnb.TaskState.SUCCEEDED
    slow = job.add_task("slow", "sleep 5")
    wait_until(lambda: slow.state == bnb.TaskState.RUNNING)
    with pytest.raises(bnb.SpecError, match="is running"):
        job.add_task("slow", "sleep 1", replace=True)
    job.terminate()
    assert slow.state == bnb.TaskState.CANCELLED
    with pytest.raises(bnb.SpecError, match="accepts no more tasks"):
        job.add_task("late", "true")


def scale(x, factor=2):
    return x * factor


def test_python_calls_are_equal_by_name_and_arguments(pool2, unique):
    job = pool2.job(unique)
    t = job.submit(scale, 21, task_id="py")
    assert t.result(timeout=30) == 42
    again = job.submit(scale, 21, task_id="py")               # as a re-run notebook would
    assert len(again.attempts) == 1
    with pytest.raises(bnb.SpecError, match="different spec"):
        job.submit(scale, 21, factor=3, task_id="py")


def test_resuming_a_job_its_driver_died_ending_finishes_ending_it(pool2, unique, tmp_path):
    led = pool2.ledger
    fake_job(led, unique, tmp_path, ended_days_ago=0, states=("succeeded", "running", "active"))
    with led._tx() as con:
        con.execute("UPDATE jobs SET state = 'terminating' WHERE id = ?", (unique,))
    assert led.acquire_lease(unique, dead_owner(), ttl=600) is None
    job = bnb.Job.attach(unique, pool=pool2)
    assert job.state == bnb.JobState.COMPLETED and led.job(unique)["reason"] == "terminated"
    assert job.counts()["cancelled"] == 2 and job.counts()["succeeded"] == 1
    assert led.attempts(unique, "t1")[0]["state"] == "terminated"


def test_attaching_a_completed_job_holds_no_lease(pool2, unique, tmp_path):
    led = pool2.ledger
    fake_job(led, unique, tmp_path, ended_days_ago=1)
    with led._tx() as con:
        con.execute("UPDATE jobs SET state = 'completed', reason = 'all_tasks_complete' WHERE id = ?", (unique,))
    job = bnb.Job.attach(unique, pool=pool2)
    assert job.result().counts == {"succeeded": 1}
    assert led.job(unique)["lease_owner"] is None      # another process may attach or prune it
    assert bnb.prune(older_than=0, ledger=led, dry_run=True).count(unique) == 1


def test_watching_a_job_nobody_dispatches_does_not_hang(ledger, tmp_path):
    fake_job(ledger, "stalled", tmp_path, ended_days_ago=0, states=("succeeded", "running"))
    assert ledger.acquire_lease("stalled", dead_owner(), ttl=600) is None
    t0 = time.monotonic()
    with pytest.raises(bnb.WaitTimeout, match="no live process dispatches it.*batchnb resume stalled"):
        bnb.Job.attach("stalled", ledger=ledger).wait(quiet=True)
    assert time.monotonic() - t0 < 5


# -- misspelt and missing options on a live pool (issue 12) ------------------------------

def test_pool_keywords_neither_it_nor_its_backend_take_are_named_before_anything_starts(ledger):
    with pytest.raises(bnb.SpecError, match="dedicted: not a keyword of bnb.Pool nor an option of the 'local' "
                                            "backend; did you mean 'dedicated'?") as err:
        bnb.Pool("typo", dedicted=2, ledger=ledger)
    assert err.value.field == "dedicted"
    with pytest.raises(bnb.SpecError, match="did you mean 'memory_limit'"):
        bnb.Pool("typo", dedicated=0, memory_limt="1GB", ledger=ledger)
    with pytest.raises(bnb.SpecError, match="did you mean 'address'") as err:
        bnb.Pool("typo", "address", adress="tcp://127.0.0.1:1", account_key="s3cret", ledger=ledger)
    assert "s3cret" not in str(err.value)
    with pytest.raises(bnb.SpecError, match="account_key: .*the 'local' backend takes memory_limit") as err:
        bnb.Pool("typo", dedicated=0, account_key="s3cret", ledger=ledger)
    assert "s3cret" not in str(err.value)      # a misspelt keyword may carry a credential: never shown


def test_pool_job_options_are_checked_and_an_id_alone_reattaches(pool2, unique):
    with pytest.raises(bnb.SpecError, match="max_task_retry: 2 is invalid: not a keyword of pool.job\\(\\); "
                                            "did you mean 'max_task_retries'\\?"):
        pool2.job(unique, max_task_retry=2)
    with pytest.raises(bnb.SpecError, match="prep: 42 is invalid: expected bnb.JobPrep"):
        pool2.job(unique, prep=42)
    assert pool2.ledger.job(unique) is None          # nothing was made by a refused call
    job = pool2.job(unique, max_task_retries=3, on_all_tasks_complete="noaction", prep=None)
    job.add_task("a", "true")
    again = pool2.job(unique)                         # the id alone: the same job, as it was made
    assert again.id == job.id and again._run.spec.max_task_retries == 3
    assert [t.id for t in again.tasks()] == ["a"]
    with pytest.raises(bnb.SpecError, match="other options"):
        pool2.job(unique, max_task_retries=1)
    # From the ledger too: a job a process that is gone made with its own options.
    pool2.ledger.create_job(unique + "-old", {"id": unique + "-old", "max_task_retries": 4}, pool2.name,
                            now=time.time())
    resumed = pool2.job(unique + "-old")
    assert resumed._run.spec.max_task_retries == 4 and resumed.wait(timeout=30, quiet=True).counts == {}


def no_limit(x, max_wallclock=None):
    return (x, max_wallclock)


def read_token():
    import os
    return os.environ["TOKEN"]


def test_submit_options_typos_secrets_and_unpicklable_arguments(pool2, unique, monkeypatch):
    job = pool2.job(unique)
    with pytest.raises(bnb.SpecError, match="did you mean 'max_wall_clock'") as err:
        job.submit(scale, 21, max_wallclock="1m")
    assert err.value.field == "max_wallclock"
    with pytest.raises(bnb.SpecError, match="scale\\(\\) takes no keyword 'colour'"):
        job.map(scale, [1, 2], colour="red")
    # A keyword the function takes is the function's, however much it looks like a task option.
    assert job.submit(no_limit, 1, max_wallclock=5).result(timeout=60) == (1, 5)
    monkeypatch.setenv("BATCHNB_TEST_SUBMIT_TOKEN", "t0ken")
    t = job.submit(read_token, secrets={"TOKEN": "env:BATCHNB_TEST_SUBMIT_TOKEN"})
    assert t.result(timeout=60) == "t0ken"
    lock = threading.Lock()
    with pytest.raises(bnb.SpecError, match="argument 'factor'.*cannot be pickled") as err:
        job.submit(scale, 2, factor=lock)
    assert err.value.value is lock


def _bytes_of(n):
    return b"x" * n


def test_a_result_too_big_for_the_ledger_is_read_back_from_the_results_url(pool2, unique):
    job = pool2.job(unique)
    t = job.submit(_bytes_of, 2_000_000)
    assert t.result(timeout=60) == b"x" * 2_000_000
    assert pool2.ledger.task(unique, t.task_id)["result_url"]
    offline = bnb.Job.attach(unique, ledger=Ledger(pool2.ledger.path))   # no pool: configured storage options
    assert offline.task(t.task_id).result(timeout=10) == b"x" * 2_000_000
