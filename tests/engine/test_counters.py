"""job.task_counts() from the ledger's per-state counters, job.stats(), job.frame()."""

from __future__ import annotations

import sqlite3

import pandas as pd

import batchnb as bnb
from batchnb.engine import schema
from batchnb.engine.ledger import Ledger


def _counted(ledger: Ledger, job_id: str) -> dict:
    return {r[0]: r[1] for r in ledger._query(
        "SELECT state, COUNT(*) FROM tasks WHERE job_id = ? GROUP BY state", (job_id,))}


def test_counters_follow_every_task_write_and_match_a_recount(pool2, unique):
    job = pool2.job(unique)
    job.add_tasks([{"id": "ok", "command": "true"}, {"id": "bad", "command": "exit 3"},
                   {"id": "after", "command": "true", "depends_on": ["bad"]}])
    job.add_task("ok", "true", replace=True)          # a replaced task's row is deleted and inserted again
    job.wait(timeout=60, quiet=True)
    ledger = job.ledger
    stored = {r[0]: r[1] for r in ledger._query("SELECT state, n FROM task_counts WHERE job_id = ?", (unique,))}
    assert stored == _counted(ledger, unique) == {"succeeded": 1, "failed": 1, "blocked": 1}
    assert job.task_counts() == bnb.TaskCounts(active=0, running=0, completed=3, succeeded=1, failed=1,
                                               blocked=1, cancelled=0)
    assert job.task_counts().total == 3 and job.task_counts().live == 0


def test_a_ledger_from_before_the_counters_gets_them_filled_from_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path, isolation_level=None)
    for n, _, step in schema.MIGRATIONS[:3]:       # a version-3 ledger: tasks, no counters
        step(con)
    con.execute("PRAGMA user_version = 3")
    con.execute("INSERT INTO jobs(id, spec, state, created) VALUES ('old', '{}', 'active', 0)")
    con.executemany("INSERT INTO tasks(job_id, id, seq, spec, state) VALUES ('old', ?, ?, '{}', ?)",
                    [("a", 0, "succeeded"), ("b", 1, "succeeded"), ("c", 2, "active")])
    con.close()
    ledger = Ledger(path)
    assert ledger.task_counts("old") == {"succeeded": 2, "active": 1}
    ledger._query("SELECT 1")
    with ledger._tx() as c:
        c.execute("UPDATE tasks SET state = 'running' WHERE id = 'c'")
    assert ledger.task_counts("old") == {"succeeded": 2, "running": 1}


def test_stats_and_frame_of_a_finished_job(pool2, unique):
    job = pool2.job(unique)
    job.add_tasks([{"id": f"t{i}", "command": "sleep 0.2"} for i in range(3)]
                  + [{"id": "bad", "command": "exit 7"}])
    job.wait(timeout=60, quiet=True)
    stats = job.stats()
    assert isinstance(stats, bnb.JobStats)
    assert stats.attempts == 4 and stats.retries == 0 and stats.requeues == 0
    assert 0.6 <= stats.task_seconds <= stats.wall_clock * 2 + 0.1
    assert stats.wall_clock >= 0.4 and stats.wait_seconds >= 0
    assert stats.wall_clock == job.stats().wall_clock          # an ended job's clock stands still

    df = job.frame()
    assert df.index.name == "id" and sorted(df.index) == ["bad", "t0", "t1", "t2"]
    assert str(df["exit_code"].dtype) == "Int64" and df.loc["bad", "exit_code"] == 7
    for col in ("created", "started", "ended"):
        assert isinstance(df[col].dtype, pd.DatetimeTZDtype) and str(df[col].dt.tz) == "UTC", col
    assert pd.api.types.is_timedelta64_dtype(df["duration"])
    assert df.loc["t0", "duration"] >= pd.Timedelta(seconds=0.2)
    assert (df["started"] >= df["created"]).all()
