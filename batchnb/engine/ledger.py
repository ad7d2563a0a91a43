"""The durable record: jobs, tasks, attempts, events, node usage, audit.

SQLite in WAL mode. The dispatcher gathers the changes of one turn of its
loop in a :class:`Batch` and writes them in one transaction *before* it
publishes the matching events, so what anyone has seen is on disk. A process
that dies loses nothing that finished; a new one reads the same file and
resumes (``running`` attempts of a dead driver become ``interrupted``).

>>> import tempfile, os
>>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
>>> led.create_job("j", {"id": "j"}, pool="local", now=0.0)
>>> led.job("j")["state"]
'active'
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from ..errors import LeaseHeld, LedgerError
from .ledger_batch import TASK_COLUMNS, Batch, write_batch
from .ledger_queries import LedgerQueries, put_array
from .ledger_mode import tighten
from .ledger_repair import sqlite_error, verify
from .ledger_schedules import ScheduleRecords
from .schema import SCHEMA_VERSION, check_version, file_version, migrate

log = logging.getLogger("batchnb.ledger")

#: Every column of the tasks table (what :meth:`Ledger.tasks` may be asked for).
TASK_TABLE_COLUMNS = ("job_id", "id", "seq", "spec", "created", *TASK_COLUMNS)


def owner_id() -> str:
    """A lease owner name for this process: ``host:pid:<random>``."""
    import uuid
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_process(owner: str) -> tuple[str, int] | None:
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return (host, int(pid)) if host and pid.isdigit() else None


def holder_alive(owner: str) -> bool:
    """False when ``owner`` names a process of this host that has died.

    A driver killed with SIGKILL cannot release its lease; on the same host
    its death is certain, so a resumer need not wait for the lease to expire.
    A holder on another host (or of another form) counts as alive until its
    lease expires.
    """
    proc = _owner_process(owner)
    if proc is None or proc[0] != socket.gethostname():
        return True
    if proc[1] == os.getpid():
        return True
    import psutil
    try:
        return psutil.Process(proc[1]).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _task_columns(columns: Iterable[str] | None) -> str:
    """The select list of :meth:`Ledger.tasks`: names of the tasks table's columns, nothing else."""
    if columns is None:
        return "*"
    names = (columns,) if isinstance(columns, str) else tuple(columns)
    unknown = [c for c in names if c not in TASK_TABLE_COLUMNS]
    if unknown or not names:
        raise ValueError(f"Ledger.tasks: columns must name columns of the tasks table {TASK_TABLE_COLUMNS}, "
                         f"got {unknown or names!r}")
    return ", ".join(names)


def _foreign(owner: str | None) -> bool:
    """True when a lease is held by another process (the fence of :meth:`Ledger.commit`)."""
    proc = _owner_process(owner) if owner else None
    return proc is not None and proc != (socket.gethostname(), os.getpid())


def _lease_owner(con, job_id: str) -> str | None:
    row = con.execute("SELECT lease_owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0] if row else None


def default_path() -> Path:
    from .. import _config
    configured = _config.get("ledger")
    return Path(configured).expanduser() if configured else _config.home() / "ledger.sqlite"


class Ledger(LedgerQueries, ScheduleRecords):
    """One SQLite file; safe to share between threads and processes.

    Every SQL statement of batchnb is in this module, :mod:`.ledger_queries`
    (the questions of the cost replay, retention and offline tools, inherited
    from :class:`~.ledger_queries.LedgerQueries`) and :mod:`.schema` (the
    tables and their migrations, applied when the file is opened); callers
    use named methods.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)   # a new folder: the owner's only
        verify(self.path)    # an empty, foreign or damaged file is refused before anything writes to it
        tighten(self.path)   # 0600, also a ledger an older batchnb made 0644
        self._local = threading.local()
        self._write_lock = threading.Lock()
        #: called before each read: wait until adds queued to a dispatcher are in (engine/posted.py)
        self.barriers: list = []
        #: called with (job id, rows) before task rows are inserted: who keeps which ids a job has
        self.adding_hooks: list = []
        # The schema version is read outside a transaction: a ledger that is up to date (nearly
        # always) is opened without taking the write lock.
        try:
            version = file_version(self._con())
        except sqlite3.Error as exc:
            raise sqlite_error(self.path, exc) from None
        check_version(version, self.path)
        if version != SCHEMA_VERSION:
            with self._tx() as con:
                before, after = migrate(con, self.path)
            if before:
                log.info("batchnb: ledger %s upgraded from schema version %d to %d", self.path, before, after)

    # -- connections -----------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                con.row_factory = sqlite3.Row
                con.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a crash of the process (not of the OS) and
                # is several times faster than FULL for the many small commits we make.
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:
                if con is not None:       # it opened, then failed (e.g. not a database)
                    con.close()
                raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from None
            self._local.con = con
        return con

    class _Tx:
        def __init__(self, ledger: "Ledger"):
            self.ledger = ledger

        def __enter__(self):
            self.ledger._write_lock.acquire()
            self.con = self.ledger._con()
            try:
                self.con.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.ledger._write_lock.release()
                raise
            return self.con

        def __exit__(self, exc_type, exc, tb):
            try:
                self.con.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.ledger._write_lock.release()
            if isinstance(exc, sqlite3.Error):
                raise sqlite_error(self.ledger.path, exc) from exc

    def _tx(self) -> "_Tx":
        return Ledger._Tx(self)

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        for wait in self.barriers:
            wait()
        try:
            return self._con().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise sqlite_error(self.path, exc) from None

    def commit(self, batch: Batch) -> None:
        """Write a batch in one transaction.

        Statements about a job whose lease another process has taken are
        skipped (a fence): a driver that was frozen past its lease and wakes
        up must not overwrite what the new holder recorded.
        """
        if not batch:
            return
        with self._tx() as con:
            fenced = {j for j in batch.jobs() if _foreign(_lease_owner(con, j))}
            write_batch(con, batch, fenced)
        if fenced:
            log.warning("batchnb: not recording changes to job(s) %s: another process holds their lease now",
                        ", ".join(sorted(fenced)))
        batch.clear()

    # -- jobs ------------------------------------------------------------
    def create_job(self, job_id: str, spec: dict, pool: str | None, now: float, tags: dict | None = None) -> None:
        with self._tx() as con:
            con.execute("INSERT INTO jobs(id, spec, pool, state, created, tags) VALUES (?,?,?,?,?,?)",
                        (job_id, json.dumps(spec), pool, "active", now, json.dumps(tags or {})))
            con.execute("INSERT INTO events(time, job_id, kind, state) VALUES (?,?,?,?)",
                        (now, job_id, "job", "active"))

    def job(self, job_id: str) -> dict | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return dict(rows[0]) if rows else None

    def jobs(self, pool: str | None = None) -> list[dict]:
        """Every job, or those of one pool, oldest first."""
        if pool is None:
            return [dict(r) for r in self._query("SELECT * FROM jobs ORDER BY created")]
        return [dict(r) for r in self._query("SELECT * FROM jobs WHERE pool = ? ORDER BY created", (pool,))]

    def task_counts(self, job_id: str) -> dict[str, int]:
        # The triggers' counters (engine/counters.py), not COUNT(*): O(1) in the job's size.
        return {r[0]: r[1] for r in self._query(
            "SELECT state, n FROM task_counts WHERE job_id = ? AND n > 0", (job_id,))}

    # -- leases: one dispatching process per job -------------------------
    def acquire_lease(self, job_id: str, owner: str, ttl: float, now: float | None = None) -> str | None:
        """Take or renew the job's lease; return None on success, else the live holder."""
        now = time.time() if now is None else now
        with self._tx() as con:
            row = con.execute("SELECT lease_owner, lease_expires FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise LedgerError(f"job {job_id!r} is not in the ledger {self.path}")
            holder, expires = row
            if holder and holder != owner and expires and expires > now and holder_alive(holder):
                return holder
            con.execute("UPDATE jobs SET lease_owner = ?, lease_expires = ? WHERE id = ?", (owner, now + ttl, job_id))
        return None

    def lease(self, job_id: str, now: float | None = None) -> str | None:
        """The live holder of the job's lease, or None when nobody dispatches it."""
        now = time.time() if now is None else now
        row = self.job(job_id)
        if row is None or not row["lease_owner"] or not row["lease_expires"] or row["lease_expires"] <= now:
            return None
        return row["lease_owner"] if holder_alive(row["lease_owner"]) else None

    def release_lease(self, job_id: str, owner: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE jobs SET lease_owner = NULL, lease_expires = NULL WHERE id = ? AND lease_owner = ?",
                        (job_id, owner))

    # -- tasks -----------------------------------------------------------
    def task_ids(self, job_id: str) -> Iterable[str]:
        """Every task id of the job, lower case, one at a time; not held back by :attr:`barriers`."""
        for (tid,) in self._con().execute("SELECT lower(id) FROM tasks WHERE job_id = ?", (job_id,)):
            yield tid

    def task_ids_in(self, job_id: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` the job has (lower case); not held back by :attr:`barriers`."""
        rows = self._con().execute("SELECT lower(id) FROM tasks WHERE job_id = ? AND id IN (SELECT value FROM "
                                   "json_each(?))", (job_id, json.dumps(ids))).fetchall()
        return {r[0] for r in rows}

    def add_tasks(self, job_id: str, rows: Iterable[tuple[str, int, str, str]], now: float,
                  replace_ids: Iterable[str] = (), array: tuple[str, str] | None = None) -> None:
        """Insert ``(task_id, seq, spec_json, state)`` rows in one transaction.

        ``array``: ``(id, record)`` of the task array the rows refer to, written with them;
        their adding is then one event, not one per task."""
        rows = list(rows)
        for hook in self.adding_hooks:
            hook(job_id, rows)
        with self._tx() as con:
            holder = _lease_owner(con, job_id)
            if _foreign(holder):
                raise LeaseHeld(f"job {job_id!r} is dispatched by another process now ({holder}); "
                                "this process may only watch it")
            for task_id in replace_ids:
                # The task row goes; its attempts stay (their numbers go on), so history and cost remain.
                con.execute("DELETE FROM tasks WHERE job_id = ? AND id = ?", (job_id, task_id))
            con.executemany(
                "INSERT INTO tasks(job_id, id, seq, spec, state, created, updated) VALUES (?,?,?,?,?,?,?)",
                [(job_id, tid, seq, spec, state, now, now) for tid, seq, spec, state in rows])
            if array is not None:
                put_array(con, job_id, array[0], array[1], now)
                con.execute("INSERT INTO events(time, job_id, task_id, kind, state, data) VALUES (?,?,?,?,?,?)",
                            (now, job_id, rows[0][0] if rows else None, "tasks", rows[0][3] if rows else None,
                             json.dumps({"array": array[0], "count": len(rows)})))
                return
            con.executemany("INSERT INTO events(time, job_id, task_id, kind, state) VALUES (?,?,?,?,?)",
                            [(now, job_id, tid, "task", state) for tid, _, _, state in rows])

    def tasks(self, job_id: str, columns: Iterable[str] | None = None, *,
              states: Iterable[str] | None = None) -> list[sqlite3.Row]:
        """The job's task rows in the order they were added.

        ``columns`` names the columns to read (all when None: a view of a
        100k-task job reads three, not every task's spec); ``states`` keeps
        only the tasks in these states (a set of :mod:`batchnb.states`, such
        as ``FAILED_TASK_STATES``). Callers name what they want; the SQL is
        written here.
        """
        sql = f"SELECT {_task_columns(columns)} FROM tasks WHERE job_id = ?"
        params: tuple = (job_id,)
        if states is not None:
            wanted = sorted({getattr(s, "value", s) for s in states})
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            params += tuple(wanted)
        return self._query(sql + " ORDER BY seq", params)

    def task(self, job_id: str, task_id: str) -> dict | None:
        rows = self._query("SELECT * FROM tasks WHERE job_id = ? AND id = ?", (job_id, task_id))
        return dict(rows[0]) if rows else None

    def attempts(self, job_id: str, task_id: str | None = None) -> list[dict]:
        if task_id is None:
            rows = self._query("SELECT * FROM attempts WHERE job_id = ? ORDER BY task_id, n", (job_id,))
        else:
            rows = self._query("SELECT * FROM attempts WHERE job_id = ? AND task_id = ? ORDER BY n",
                               (job_id, task_id))
        return [dict(r) for r in rows]

    def events(self, job_id: str | None = None, since: int = 0) -> list[dict]:
        if job_id is None:
            rows = self._query("SELECT * FROM events WHERE seq > ? ORDER BY seq", (since,))
        else:
            rows = self._query("SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, since))
        return [dict(r) for r in rows]

    def node_history(self, pool: str) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM nodes WHERE pool = ? ORDER BY time", (pool,))]

    def audit(self, action: str, job_id: str | None = None, detail: str | None = None, actor: str | None = None):
        from .audit import record     # the engine's own records (resume, prune, ...) carry who and an outcome too
        record(self, action, f"job:{job_id}" if job_id else "", identity=actor, detail=detail, job=job_id)

    def last_audit(self, job_id: str, action: str, since: float = 0.0) -> dict | None:
        """The newest audit row of ``action`` for the job at or after ``since`` (requests between processes)."""
        rows = self._query("SELECT * FROM audit WHERE job_id = ? AND action = ? AND time >= ? "
                           "ORDER BY time DESC LIMIT 1", (job_id, action, since))
        return dict(rows[0]) if rows else None

    def delete_job(self, job_id: str) -> None:
        with self._tx() as con:
            for table, col in (("attempts", "job_id"), ("tasks", "job_id"), ("events", "job_id"), ("jobs", "id"),
                               ("task_arrays", "job_id")):
                con.execute(f"DELETE FROM {table} WHERE {col} = ?", (job_id,))


_default_ledger: Ledger | None = None
_ledger_lock = threading.Lock()


def default_ledger() -> Ledger:
    """The ledger at ``<home>/ledger.sqlite`` (shared by pools of this process)."""
    global _default_ledger
    with _ledger_lock:
        if _default_ledger is None or _default_ledger.path != Ledger(None).path:
            _default_ledger = Ledger(None)
        return _default_ledger
