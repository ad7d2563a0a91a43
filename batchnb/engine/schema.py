"""The ledger's tables, and how a ledger file made by an older batchnb is brought up to date.

The schema version lives in SQLite's ``PRAGMA user_version`` (0 in a new
file). :data:`MIGRATIONS` is the ordered list of steps; opening a ledger
applies every step after the file's version, then sets ``user_version`` to
:data:`SCHEMA_VERSION`, all in one transaction: a process that dies half-way
leaves the file as it was, and of two processes that open one file at once
the second finds it up to date. A file written by a newer batchnb is refused
with a :class:`~batchnb.errors.LedgerError`, never rewritten.

Ledgers made before ``user_version`` was used kept their version in a
``meta`` table (``schema = 1``) and are read as version 1; a file with
neither is read as version 0.

To change the schema, append a step ``(n + 1, "what it changes", function)``
and never edit a step that has shipped: a ledger may be any number of
versions behind.

>>> import sqlite3
>>> con = sqlite3.connect(":memory:", isolation_level=None)
>>> migrate(con, ":memory:") == (0, SCHEMA_VERSION)
True
>>> file_version(con) == SCHEMA_VERSION
True
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ..errors import LedgerError
from .counters import add_task_counters

# The tables of the first ledgers (version 1). Every statement may meet a table that already
# exists: files made before the ``meta`` table had part of these.
_V1 = """
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY COLLATE NOCASE, spec TEXT NOT NULL, pool TEXT, state TEXT NOT NULL,
  reason TEXT, created REAL, ended REAL, tags TEXT,
  lease_owner TEXT, lease_expires REAL);
CREATE TABLE IF NOT EXISTS tasks(
  job_id TEXT NOT NULL COLLATE NOCASE, id TEXT NOT NULL COLLATE NOCASE, seq INTEGER NOT NULL,
  spec TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  requeues INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, node TEXT, failure TEXT,
  result BLOB, result_url TEXT, created REAL, updated REAL, ended REAL,
  PRIMARY KEY(job_id, id));
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(job_id, state);
CREATE TABLE IF NOT EXISTS attempts(
  job_id TEXT NOT NULL COLLATE NOCASE, task_id TEXT NOT NULL COLLATE NOCASE, n INTEGER NOT NULL,
  node TEXT, state TEXT NOT NULL, dispatched REAL, start REAL, end REAL, exit_code INTEGER,
  category TEXT, message TEXT, task_dir TEXT, bytes_in INTEGER, bytes_out INTEGER,
  stage_in_seconds REAL, stage_out_seconds REAL, stdout_tail TEXT, stderr_tail TEXT,
  PRIMARY KEY(job_id, task_id, n));
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, job_id TEXT, task_id TEXT,
  kind TEXT NOT NULL, state TEXT, data TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS nodes(
  pool TEXT NOT NULL, node_id TEXT NOT NULL, grp TEXT, state TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit(time REAL NOT NULL, actor TEXT, action TEXT NOT NULL, job_id TEXT, detail TEXT);
"""


def _v1_tables(con: sqlite3.Connection) -> None:
    for statement in filter(str.strip, _V1.split(";")):
        con.execute(statement)


def _v2_slots_and_user_version(con: sqlite3.Connection) -> None:
    # attempts.slots: the slots an attempt held (1/n of one slot when n tasks rode in one Dask
    # task). Version-1 ledgers made after it was added have it already.
    if "slots" not in {r[1] for r in con.execute("PRAGMA table_info(attempts)")}:
        con.execute("ALTER TABLE attempts ADD COLUMN slots REAL")
    con.execute("DROP TABLE IF EXISTS meta")   # it held only the version, which user_version holds now


def _v3_schedules(con: sqlite3.Connection) -> None:
    # A job schedule (Azure's JobSchedule) and what became of each of its due runs; the pool
    # that runs it reads them back when it is made again (or its detached agent restarts).
    con.execute("""CREATE TABLE IF NOT EXISTS schedules(
      name TEXT PRIMARY KEY COLLATE NOCASE, pool TEXT NOT NULL, spec TEXT NOT NULL, builder BLOB,
      state TEXT NOT NULL, created REAL NOT NULL, next_due REAL, pending REAL,
      started INTEGER NOT NULL DEFAULT 0, updated REAL)""")
    con.execute("""CREATE TABLE IF NOT EXISTS schedule_runs(
      schedule TEXT NOT NULL COLLATE NOCASE, seq INTEGER NOT NULL, due REAL NOT NULL, time REAL NOT NULL,
      outcome TEXT NOT NULL, job_id TEXT, reason TEXT, count INTEGER NOT NULL DEFAULT 1,
      PRIMARY KEY(schedule, seq))""")


def _v5_audit_append_only(con: sqlite3.Connection) -> None:
    # Who did what, to what, how it ended, in which pool (engine/audit.py); older rows keep NULL there.
    have = {r[1] for r in con.execute("PRAGMA table_info(audit)")}
    for column in ("target", "outcome", "pool"):
        if column not in have:
            con.execute(f"ALTER TABLE audit ADD COLUMN {column} TEXT")
    # An audit log that can be edited proves nothing: the file itself refuses it.
    for op in ("UPDATE", "DELETE"):
        con.execute(f"CREATE TRIGGER IF NOT EXISTS audit_no_{op.lower()} BEFORE {op} ON audit "
                    f"BEGIN SELECT RAISE(ABORT, 'the audit table is append-only: {op} refused'); END")


def _v6_roles(con: sqlite3.Connection) -> None:
    # Who holds which role on a detached pool or one of its jobs (engine/ledger_roles.py); '' is the whole pool.
    con.execute("""CREATE TABLE IF NOT EXISTS roles(
      pool TEXT NOT NULL COLLATE NOCASE, identity TEXT NOT NULL, job_id TEXT NOT NULL DEFAULT '' COLLATE NOCASE,
      role TEXT NOT NULL, granted REAL NOT NULL, granted_by TEXT, PRIMARY KEY(pool, identity, job_id))""")


def _v7_task_arrays(con: sqlite3.Connection) -> None:
    # A job.map's one array record (engine/arrays.py): its call pickled once and its argument chunks;
    # the map's tasks rows only point into it. Ledgers that ran a map before this step have the table.
    con.execute("""CREATE TABLE IF NOT EXISTS task_arrays(
      job_id TEXT NOT NULL COLLATE NOCASE, id TEXT NOT NULL, spec TEXT NOT NULL, created REAL,
      PRIMARY KEY(job_id, id))""")


#: ``(version, what it changes, step)`` in order; step ``n`` takes a file from version n - 1 to n.
MIGRATIONS: list[tuple[int, str, Callable[[sqlite3.Connection], None]]] = [
    (1, "the jobs, tasks, attempts, events, nodes and audit tables", _v1_tables),
    (2, "attempts.slots; the version moves from the meta table to PRAGMA user_version",
     _v2_slots_and_user_version),
    (3, "the schedules and schedule_runs tables (job schedules)", _v3_schedules),
    (4, "task_counts: per-job per-state counters kept by triggers on tasks", add_task_counters),
    (5, "audit.target, .outcome and .pool; triggers make the audit table append-only", _v5_audit_append_only),
    (6, "the roles table: reader, contributor, owner of a detached pool or one of its jobs", _v6_roles),
    (7, "the task_arrays table: one record per job.map, its tasks pointing into it", _v7_task_arrays),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
assert [n for n, _, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1)), "migrations must be numbered 1, 2, ..."


def file_version(con: sqlite3.Connection) -> int:
    """The schema version of the open file: ``user_version``, else the old ``meta`` table's, else 0."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version:
        return version
    if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchall():
        return 0
    row = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    try:
        return int(row[0]) if row else 0
    except ValueError:
        raise LedgerError(f"the ledger's meta table says schema {row[0]!r}, which is not a version number; "
                          "it was not written by batchnb") from None


def check_version(version: int, path) -> None:
    """Raise :class:`LedgerError` when a newer batchnb wrote the file."""
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"the ledger {path} has schema version {version}, and this batchnb knows versions up to "
            f"{SCHEMA_VERSION}: a newer batchnb wrote it. Upgrade batchnb (pip install -U batchnb) to use "
            "it, or point this one at another ledger (dask config 'batchnb.ledger' or BATCHNB_HOME)")


def migrate(con: sqlite3.Connection, path) -> tuple[int, int]:
    """Apply the steps the open file lacks; return ``(version before, version after)``.

    Runs in the caller's transaction when one is open (the ledger opens one
    with ``BEGIN IMMEDIATE``, so that the version read here cannot change
    before the steps are written), else in one of its own.
    """
    own = not con.in_transaction
    if own:
        con.execute("BEGIN IMMEDIATE")
    try:
        before = file_version(con)
        check_version(before, path)
        for n, what, step in MIGRATIONS:
            if n <= before:
                continue
            try:
                step(con)
            except sqlite3.Error as exc:
                raise LedgerError(f"the ledger {path} could not be upgraded to schema version {n} "
                                  f"({what}): {exc}; it is left at version {before}") from exc
        if before != SCHEMA_VERSION:
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    except BaseException:
        if own:
            con.execute("ROLLBACK")
        raise
    if own:
        con.execute("COMMIT")
    return before, SCHEMA_VERSION
