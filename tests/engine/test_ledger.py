"""The ledger: batches, leases, durability across connections and processes."""

from __future__ import annotations

import multiprocessing
import re
import time

import pytest

from batchnb.errors import LedgerError
from batchnb.engine.ledger import Batch, Ledger


def test_batch_is_one_transaction(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    ledger.add_tasks("j", [("a", 0, "{}", "active"), ("b", 1, "{}", "pending")], now=1.0)
    b = Batch()
    b.task("j", "a", state="running", node="n1")
    b.attempt("j", "a", 1, node="n1", state="running", dispatched=2.0)
    b.task("j", "nope", bogus=1) if False else None
    with pytest.raises(LedgerError):
        b.task("j", "a", bogus=1)
    ledger.commit(b)
    assert ledger.task("j", "A")["state"] == "running"  # ids are case-insensitive
    assert ledger.attempts("j", "a")[0]["dispatched"] == 2.0
    assert ledger.task_counts("j") == {"running": 1, "pending": 1}
    assert [e["state"] for e in ledger.events("j")] == ["active", "active", "pending"]


def test_a_failed_batch_writes_nothing(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    ledger.add_tasks("j", [("a", 0, "{}", "active")], now=1.0)
    b = Batch()
    b.task("j", "a", state="running")
    b.statements.append(("INSERT INTO nowhere VALUES (1)", ()))
    with pytest.raises(LedgerError):
        ledger.commit(b)
    assert ledger.task("j", "a")["state"] == "active"


def test_leases(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    assert ledger.acquire_lease("j", "me", ttl=10, now=100) is None
    assert ledger.acquire_lease("j", "you", ttl=10, now=105) == "me"
    assert ledger.acquire_lease("j", "you", ttl=10, now=111) is None  # expired: taken over
    ledger.release_lease("j", "me")  # not mine any more: no effect
    assert ledger.acquire_lease("j", "me", ttl=10, now=112) == "you"
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.acquire_lease("ghost", "me", ttl=10)


def _writer(path, n):
    led = Ledger(path)
    for i in range(n):
        b = Batch()
        b.event(time.time(), "note", "j", f"t{i}")
        led.commit(b)


def test_two_processes_write_one_ledger(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(ledger.path), 200)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len([e for e in ledger.events("j") if e["kind"] == "note"]) == 400


def test_wal_mode_and_location(home):
    from batchnb.engine.ledger import default_path
    led = Ledger()
    assert led.path == default_path() and str(led.path).startswith(str(home))
    assert led._con().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_location_from_dask_config(tmp_path, monkeypatch):
    import dask
    from batchnb.engine.ledger import default_path
    monkeypatch.delenv("BATCHNB_HOME", raising=False)
    with dask.config.set({"batchnb.home": str(tmp_path / "cfg-home")}):
        assert default_path() == tmp_path / "cfg-home" / "ledger.sqlite"
    with dask.config.set({"batchnb.ledger": str(tmp_path / "elsewhere.sqlite")}):
        assert Ledger().path == tmp_path / "elsewhere.sqlite"


# -- the schema and its migrations ---------------------------------------------------------------

# What batchnb wrote before the version moved to PRAGMA user_version: a meta table saying
# schema 1 (attempts.slots was added to such files later, by an ALTER on opening).
_OLD_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE jobs(
  id TEXT PRIMARY KEY COLLATE NOCASE, spec TEXT NOT NULL, pool TEXT, state TEXT NOT NULL,
  reason TEXT, created REAL, ended REAL, tags TEXT, lease_owner TEXT, lease_expires REAL);
CREATE TABLE tasks(
  job_id TEXT NOT NULL COLLATE NOCASE, id TEXT NOT NULL COLLATE NOCASE, seq INTEGER NOT NULL,
  spec TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  requeues INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, node TEXT, failure TEXT,
  result BLOB, result_url TEXT, created REAL, updated REAL, ended REAL, PRIMARY KEY(job_id, id));
CREATE INDEX tasks_state ON tasks(job_id, state);
CREATE TABLE attempts(
  job_id TEXT NOT NULL COLLATE NOCASE, task_id TEXT NOT NULL COLLATE NOCASE, n INTEGER NOT NULL,
  node TEXT, state TEXT NOT NULL, dispatched REAL, start REAL, end REAL, exit_code INTEGER,
  category TEXT, message TEXT, task_dir TEXT, bytes_in INTEGER, bytes_out INTEGER,
  stage_in_seconds REAL, stage_out_seconds REAL, stdout_tail TEXT, stderr_tail TEXT,
  PRIMARY KEY(job_id, task_id, n));
CREATE TABLE events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, job_id TEXT, task_id TEXT,
  kind TEXT NOT NULL, state TEXT, data TEXT);
CREATE INDEX events_job ON events(job_id, seq);
CREATE TABLE nodes(pool TEXT NOT NULL, node_id TEXT NOT NULL, grp TEXT, state TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE audit(time REAL NOT NULL, actor TEXT, action TEXT NOT NULL, job_id TEXT, detail TEXT);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO jobs(id, spec, pool, state, created, tags) VALUES ('old', '{"id": "old"}', 'p', 'active', 1.0, '{}');
INSERT INTO tasks(job_id, id, seq, spec, state, attempts, created, updated, ended)
  VALUES ('old', 'a', 0, '{"id": "a"}', 'succeeded', 1, 1.0, 3.0, 3.0),
         ('old', 'b', 1, '{"id": "b"}', 'active', 0, 1.0, 1.0, NULL);
INSERT INTO attempts(job_id, task_id, n, node, state, dispatched, start, end, exit_code)
  VALUES ('old', 'a', 1, 'dedicated-0', 'succeeded', 1.5, 2.0, 3.0, 0);
INSERT INTO events(time, job_id, task_id, kind, state) VALUES (1.0, 'old', NULL, 'job', 'active'),
  (1.0, 'old', 'a', 'task', 'active'), (3.0, 'old', 'a', 'task', 'succeeded');
INSERT INTO nodes VALUES ('p', 'dedicated-0', 'dedicated', 'idle', 1.0);
INSERT INTO audit VALUES (1.0, 'pid 1', 'resume', 'old', NULL);
"""
_TABLES = ("jobs", "tasks", "attempts", "events", "nodes", "audit")


def _raw(path):
    import sqlite3
    return sqlite3.connect(path, isolation_level=None)


def _old_ledger(path, slots: bool):
    con = _raw(path)
    con.executescript(_OLD_SCHEMA + ("ALTER TABLE attempts ADD COLUMN slots REAL;" if slots else ""))
    counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in _TABLES}
    con.close()
    return counts


def _schema_of(path) -> tuple[int, set, set]:
    con = _raw(path)
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {r[1] for r in con.execute("PRAGMA table_info(attempts)")}
        return version, tables, columns
    finally:
        con.close()


def test_a_new_ledger_has_the_current_schema(tmp_path):
    from batchnb.engine.schema import SCHEMA_VERSION
    Ledger(tmp_path / "new.sqlite")
    version, tables, columns = _schema_of(tmp_path / "new.sqlite")
    assert version == SCHEMA_VERSION >= 2
    assert set(_TABLES) <= tables and "meta" not in tables and "slots" in columns


@pytest.mark.parametrize("slots", [True, False], ids=["with-slots", "before-slots"])
def test_a_ledger_of_the_meta_table_era_is_upgraded_without_losing_rows(tmp_path, slots):
    from batchnb.engine.schema import SCHEMA_VERSION
    path = tmp_path / "old.sqlite"
    counts = _old_ledger(path, slots)
    for _ in range(2):                                  # upgraded once; opened again as it is
        led = Ledger(path)
        version, tables, columns = _schema_of(path)
        assert version == SCHEMA_VERSION and "meta" not in tables and "slots" in columns
        assert {t: len(led._query(f"SELECT * FROM {t}")) for t in _TABLES} == counts
    assert led.job("old")["state"] == "active" and led.task_counts("old") == {"succeeded": 1, "active": 1}
    assert [(a["task_id"], a["node"], a["end"], a["slots"]) for a in led.attempts("old")] == \
        [("a", "dedicated-0", 3.0, None)]
    assert led.last_task_end("old") == 3.0 and len(led.audit_trail("old", action="resume")) == 1
    b = Batch()                                         # and it takes new rows
    b.attempt("old", "b", 1, node="dedicated-0", state="running", dispatched=4.0, slots=0.5)
    b.task("old", "b", state="running")
    led.commit(b)
    assert led.attempts("old", "b")[0]["slots"] == 0.5


def test_a_ledger_from_a_newer_batchnb_is_refused(tmp_path):
    from batchnb.engine.schema import SCHEMA_VERSION
    path = tmp_path / "future.sqlite"
    Ledger(path).create_job("j", {"id": "j"}, "p", now=1.0)
    con = _raw(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(LedgerError, match=rf"schema version {SCHEMA_VERSION + 1}.*up to {SCHEMA_VERSION}.*"
                                          r"[Uu]pgrade batchnb") as info:
        Ledger(path)
    assert str(path) in str(info.value)
    assert _schema_of(path)[0] == SCHEMA_VERSION + 1    # untouched


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    import batchnb.engine.ledger as ledger_module
    from batchnb.engine import schema
    path = tmp_path / "old.sqlite"
    counts = _old_ledger(path, slots=False)
    broken = (len(schema.MIGRATIONS) + 1, "a step that fails",
              lambda con: con.execute("ALTER TABLE nowhere ADD COLUMN x"))
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", broken[0])
    monkeypatch.setattr(ledger_module, "SCHEMA_VERSION", broken[0])
    with pytest.raises(LedgerError, match=rf"upgraded to schema version {broken[0]} \(a step that fails\).*"
                                          "left at version 1"):
        Ledger(path)
    version, tables, columns = _schema_of(path)         # the earlier steps were rolled back with it
    assert version == 0 and "meta" in tables and "slots" not in columns
    con = _raw(path)
    assert {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in _TABLES} == counts
    con.close()


def test_processes_that_open_a_new_file_at_once_agree(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from batchnb.engine.schema import SCHEMA_VERSION
    path = tmp_path / "race.sqlite"
    with ThreadPoolExecutor(6) as pool:                 # one connection per Ledger, as in processes
        ledgers = list(pool.map(lambda _: Ledger(path), range(6)))
    ledgers[0].create_job("j", {"id": "j"}, "p", now=1.0)
    assert all(led.job("j") for led in ledgers) and _schema_of(path)[0] == SCHEMA_VERSION


# SQL statements, and the fragments a caller could hand to them: conditions ("state IN (...)",
# "state = ?", "ended IS NULL"), clauses (WHERE, ORDER BY, ...) and SQLite's functions.
SQL = re.compile(r"\b_query\(|\b_tx\(|\b_con\(\)|\.execute(many|script)?\(|\bsqlite3\b"
                 r"|\b(SELECT|INSERT INTO|DELETE FROM|CREATE TABLE|PRAGMA)\b|\bUPDATE \w+ SET\b"
                 r"|\b\w+ (NOT )?IN ?\(|\b\w+ ?(=|!=|<>|<=|>=|<|>) ?\?|\b(WHERE|ORDER BY|GROUP BY|LIMIT \d)\b"
                 r"|\bIS (NOT )?NULL\b|\bjson_extract\(")


def test_no_sql_outside_the_ledger_modules():
    """All SQL is behind the ledger's named methods (engine/ledger*.py, schema.py):
    no statements, and no fragments of them passed in either; callers name states and columns."""
    from pathlib import Path

    import batchnb
    root = Path(batchnb.__file__).parent
    own = {root / "engine" / "ledger.py", root / "engine" / "ledger_queries.py", root / "engine" / "schema.py",
           root / "engine" / "ledger_repair.py", root / "engine" / "ledger_schedules.py",
           root / "engine" / "counters.py",     # the task_counts table, its triggers and the stats queries
           root / "engine" / "ledger_audit.py", root / "engine" / "ledger_roles.py",
           root / "engine" / "ledger_batch.py"}    # a turn's writes, grouped for executemany
    found = [f"{p.relative_to(root)}:{i}: {line.strip()}"
             for p in sorted(root.rglob("*.py")) if p not in own
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if SQL.search(line)]
    assert found == []


def test_the_sql_check_sees_fragments_and_passes_plain_code():
    # What job.py, ui/model.py and cli/jobs.py used to hand to Ledger.tasks
    for fragment in ('where="state IN (\'failed\', \'blocked\')"', 'where="state = ?", params=(s,)',
                     '"id, state ORDER BY seq"', 'tasks(j, "ended", "ended IS NOT NULL")'):
        assert SQL.search(fragment), fragment
    for plain in ("if state in FAILED_TASK_STATES:", 'ledger.tasks(job_id, ("id", "state"), states=LIVE)',
                  "# a task in one of these states", "x = y if a in b else None"):
        assert not SQL.search(plain), plain


def test_tasks_are_chosen_by_state_and_named_columns(ledger):
    from batchnb.states import FAILED_TASK_STATES, LIVE_TASK_STATES, TaskState
    ledger.create_job("j", {"id": "j"}, pool="p", now=0.0)
    ledger.add_tasks("j", [("a", 0, "{}", "failed"), ("b", 1, "{}", "active"), ("c", 2, "{}", "blocked"),
                           ("d", 3, "{}", "succeeded")], now=1.0)
    assert [r["id"] for r in ledger.tasks("j", states=FAILED_TASK_STATES)] == ["a", "c"]
    assert [r["id"] for r in ledger.tasks("j", ("id",), states=[TaskState.ACTIVE, "pending"])] == ["b"]
    assert ledger.tasks("j", states=LIVE_TASK_STATES - {TaskState.ACTIVE}) == []
    assert [tuple(r) for r in ledger.tasks("j", ("id", "state"))][:2] == [("a", "failed"), ("b", "active")]
    assert ledger.tasks("j", "state")[0].keys() == ["state"]
    with pytest.raises(ValueError, match="columns"):
        ledger.tasks("j", "id, state")              # a column list is names, not SQL text
    with pytest.raises(ValueError, match="columns"):
        ledger.tasks("j", ("id", "1; DROP TABLE tasks"))
    with pytest.raises(TypeError):
        ledger.tasks("j", where="state = ?", params=("failed",))
