"""The audit log (engine/audit.py): an append-only table, identities, outcomes, and the
actions of pools, jobs, tasks and schedules that land there once each."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from batchnb.engine import audit
from batchnb.engine.ledger import Ledger


def test_the_audit_table_refuses_update_and_delete(ledger):
    audit.record(ledger, "job-create", "job:j")
    con = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        for sql in ("UPDATE audit SET outcome = 'ok', actor = 'someone else'", "DELETE FROM audit",
                    "DELETE FROM audit WHERE action = 'job-create'"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                con.execute(sql)
        con.execute("INSERT INTO audit(time, action) VALUES (9e9, 'appended')")     # appending still works
    finally:
        con.close()
    assert [(r.action, r.outcome) for r in audit.read(ledger)] == [("job-create", "ok"), ("appended", "")]


def test_acting_as_sets_the_identity_and_the_os_user_is_the_default(ledger):
    import getpass
    audit.record(ledger, "pool-resize", "pool:p", detail="dedicated 2")
    with audit.acting_as("CN=alice"):
        assert audit.current_identity() == "CN=alice"
        with audit.acting_as("bob"):
            audit.record(ledger, "job-terminate", "job:j")
        audit.record(ledger, "task-add", "job:j", detail="3 tasks")
        seen = []
        # A thread started inside acting_as does not inherit it (contextvars), but the engine's
        # calls carry the caller's context: what matters is the thread that called.
        t = threading.Thread(target=lambda: seen.append(audit.current_identity()))
        t.start()
        t.join()
    assert audit.current_identity() == getpass.getuser() == seen[0]
    rows = audit.read(ledger)
    assert [(r.identity, r.action, r.job) for r in rows] == [
        (getpass.getuser(), "pool-resize", None), ("bob", "job-terminate", "j"), ("CN=alice", "task-add", "j")]
    assert [r.action for r in audit.read(ledger, identity="CN=alice")] == ["task-add"]
    assert [r.action for r in audit.read(ledger, job="J")] == ["job-terminate", "task-add"]   # ids are case-blind
    assert audit.read(ledger, since=rows[-1].time + 1) == []
    with pytest.raises(Exception, match="identity"):
        with audit.acting_as(""):
            pass


def test_a_failed_action_is_recorded_with_its_error_and_still_raised(ledger):
    from batchnb.errors import SpecError
    with pytest.raises(SpecError):
        with audit.audited(ledger, "job-create", "job:bad id"):
            raise SpecError("id", "bad id", "must not hold spaces")
    (r,) = audit.read(ledger)
    assert r.outcome.startswith("failed: SpecError: ") and "bad id" in r.outcome and r.job == "bad id"


def test_since_accepts_times_dates_and_durations_and_names_a_bad_value():
    from datetime import datetime, timezone

    from batchnb.errors import SpecError
    assert audit.since_time(None) is None
    assert audit.since_time(5) == 5.0
    assert audit.since_time("1h", now=7200.0) == 3600.0
    assert audit.since_time("1970-01-02") == 86400.0
    assert audit.since_time(datetime(1970, 1, 1, 1, tzinfo=timezone.utc)) == 3600.0
    with pytest.raises(SpecError, match=r"since.*'yesterday'"):
        audit.since_time("yesterday")


_V4_AUDIT = "CREATE TABLE audit(time REAL NOT NULL, actor TEXT, action TEXT NOT NULL, job_id TEXT, detail TEXT)"


def test_a_ledger_without_the_audit_columns_opens_and_gains_them(tmp_path):
    """A ledger of schema version 4 (audit rows without target or outcome, no triggers) is
    upgraded on opening: its rows stay, new records have every field, and it is append-only."""
    from batchnb.engine.schema import SCHEMA_VERSION
    path = tmp_path / "v4.sqlite"
    new = Ledger(tmp_path / "new.sqlite")      # the other tables as version 4 had them
    con = sqlite3.connect(path, isolation_level=None)
    src = sqlite3.connect(new.path)
    for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name != 'audit' "
                              "AND name NOT LIKE 'sqlite%' ORDER BY type = 'trigger'"):
        con.execute(sql)
    src.close()
    con.execute(_V4_AUDIT)
    con.execute("INSERT INTO audit VALUES (1.0, 'pid 7', 'resume', 'old', 'owner x')")
    con.execute("PRAGMA user_version = 4")
    con.close()

    led = Ledger(path)
    con = sqlite3.connect(path, isolation_level=None)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM audit")
    con.close()
    audit.record(led, "job-create", "job:new", identity="carol")
    assert [(r.identity, r.action, r.target, r.outcome, r.job) for r in audit.read(led)] == [
        ("pid 7", "resume", "job:old", "", "old"), ("carol", "job-create", "job:new", "ok", "new")]


# -- every mutating action lands once, on a real local pool ------------------------------------------------------------

def _actions(ledger, **filters) -> list[tuple]:
    return [(r.identity, r.action, r.target, r.outcome.split(":")[0], r.detail) for r in audit.read(ledger, **filters)]


def test_every_mutating_action_of_a_pool_its_jobs_and_schedules_is_recorded_once(tmp_path):
    import getpass

    import batchnb as bnb
    me = getpass.getuser()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(bnb.SpecError):
        bnb.Pool("audited", dedicated=-1, ledger=ledger)               # refused: recorded too
    pool = bnb.Pool("audited", dedicated=1, ledger=ledger)
    try:
        with pytest.raises(bnb.SpecError, match="max_task_retry"):
            pool.job("aj", max_task_retry=2)                            # refused before the engine: recorded
        job = pool.job("aj")
        with audit.acting_as("alice"):
            job.add_tasks([bnb.TaskSpec("bad", "exit 3")] + [bnb.TaskSpec(f"t{i}", "true") for i in range(3)])
            with pytest.raises(bnb.SpecError):
                job.add_task("t0", "false")                             # a different spec under a taken id
        job.wait(timeout=60, quiet=True)
        with audit.acting_as("bob"):
            assert job.reactivate_failed() == ["bad"]
        job.task("bad").wait(timeout=60)
        pool.resize(dedicated=2)
        with pytest.raises(bnb.SpecError):
            pool.resize(spot=-2)
        sched = pool.schedule("nightly", bnb.JobSpec("tmpl", tasks=[bnb.TaskSpec("x", "true")]), every="1d",
                              do_not_run_until="2999-01-01T00:00:00Z")
        sched.disable()
        sched.enable()
        sched.delete()
        job.terminate("enough")
    finally:
        pool.close()
    pool.close()                                                        # a second close changes nothing
    got = _actions(ledger)
    assert got == [
        (me, "pool-create", "pool:audited", "failed", None),
        (me, "pool-create", "pool:audited", "ok", "backend local, dedicated 1, spot 0"),
        (me, "job-create", "job:aj", "failed", None),
        (me, "job-create", "job:aj", "ok", None),
        ("alice", "task-add", "job:aj", "ok", "4 tasks"),
        ("alice", "task-add", "job:aj", "failed", "1 task"),
        ("bob", "task-reactivate", "job:aj", "ok", "1 task: bad"),
        (me, "pool-resize", "pool:audited", "ok", "dedicated 2"),
        (me, "pool-resize", "pool:audited", "failed", "spot -2"),
        (me, "schedule-create", "schedule:nightly", "ok", None),
        (me, "schedule-disable", "schedule:nightly", "ok", None),
        (me, "schedule-enable", "schedule:nightly", "ok", None),
        (me, "schedule-delete", "schedule:nightly", "ok", None),
        (me, "job-terminate", "job:aj", "ok", "reason: enough"),
        (me, "pool-close", "pool:audited", "ok", None),
    ], got
    failed = [r.outcome for r in audit.read(ledger) if r.outcome.startswith("failed")]
    assert "dedicated" in failed[0] and "max_task_retry" in failed[1] and "'t0'" in failed[2] and "spot" in failed[3]
    assert [r.action for r in audit.read(ledger, job="aj")] == [
        "job-create", "job-create", "task-add", "task-add", "task-reactivate", "job-terminate"]
    assert len(audit.read(ledger, pool="audited")) == len(got)
    assert audit.read(ledger, pool="another") == []


def test_a_large_add_writes_a_record_per_call_not_per_task(tmp_path):
    import batchnb as bnb
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pool = bnb.Pool("audited-big", dedicated=0, ledger=ledger)       # no node: nothing runs, only the adds count
    try:
        job = pool.job("big")
        job.add_tasks(bnb.TaskSpec(f"t{i}", "true") for i in range(12_000))
        job.terminate()
    finally:
        pool.close()
    details = [r.detail for r in audit.read(ledger, action="task-add")]
    # One record for the call (or one per chunk of 10,000 where the add is written in chunks).
    assert 1 <= len(details) <= 2 and sum(int(d.split()[0]) for d in details) == 12_000, details


def test_a_map_is_recorded_per_chunk_with_its_count(tmp_path, monkeypatch):
    import batchnb as bnb
    from batchnb.engine import arrays
    monkeypatch.setattr(arrays, "CHUNK", 1_000)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pool = bnb.Pool("audited-map", dedicated=0, ledger=ledger)       # no node: nothing runs, only the adds count
    try:
        job = pool.job("mapped")
        job.map(abs, range(2_500))
        job.terminate()
    finally:
        pool.close()
    details = [r.detail for r in audit.read(ledger, action="task-add")]
    assert len(details) == 3 and sum(int(d.split()[0]) for d in details) == 2_500, details
    assert all(" of map " in d for d in details), details


def test_a_job_no_process_dispatches_is_terminated_with_one_record(ledger):
    """``batchnb terminate`` (and Job.terminate of an attached job) ends a job no driver holds in the
    ledger itself: the audit record is written there, once, with the caller's identity."""
    from batchnb.engine.offline import terminate_job
    ledger.create_job("orphan", {"id": "orphan"}, pool="gone", now=1.0)
    ledger.add_tasks("orphan", [("a", 0, '{"id": "a", "command": "true"}', "active")], 1.0)
    with audit.acting_as("carol"):
        terminate_job("orphan", ledger, reason="no longer needed")
    assert [(r.identity, r.action, r.target, r.outcome, r.detail) for r in audit.read(ledger)] == [
        ("carol", "job-terminate", "job:orphan", "ok", "reason: no longer needed; tasks cancelled: 1")]
    assert [r.action for r in audit.read(ledger, pool="gone")] == ["job-terminate"]


def test_the_engines_own_records_carry_the_identity_and_an_outcome(ledger):
    """What the engine notes of its own (a job resumed, pruned, asked to end) reads as every record does."""
    with audit.acting_as("dave"):
        ledger.audit("prune", "old", "finished 2026-11-01 10:00 UTC")
    ledger.audit("terminate-request", "busy", "stop", actor="host:1:abc")
    assert [(r.identity, r.action, r.target, r.outcome, r.job) for r in audit.read(ledger)] == [
        ("dave", "prune", "job:old", "ok", "old"), ("host:1:abc", "terminate-request", "job:busy", "ok", "busy")]
    assert ledger.last_audit("busy", "terminate-request")["detail"] == "stop"     # still a request between processes
