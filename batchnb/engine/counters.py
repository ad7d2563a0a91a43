"""A job's task counts from per-state counters, and its run statistics.

The ledger keeps one row per (job, state) in ``task_counts``. SQLite triggers
on ``tasks`` move the counters in the same statement (so the same transaction)
as every insert, state change or delete of a task: no code path that writes a
task can forget them, and reading a job's counts costs the same for a million
tasks as for ten. Schema step 4 (:func:`add_task_counters`) makes the table and
the triggers and fills the table from the rows a ledger already holds.

>>> import sqlite3
>>> con = sqlite3.connect(":memory:", isolation_level=None)
>>> _ = con.execute("CREATE TABLE tasks(job_id TEXT COLLATE NOCASE, id TEXT, state TEXT)")
>>> add_task_counters(con)
>>> _ = con.executemany("INSERT INTO tasks VALUES ('j', ?, 'active')", [("a",), ("b",)])
>>> _ = con.execute("UPDATE tasks SET state = 'succeeded' WHERE id = 'a'")
>>> counters(con, "j")
{'active': 1, 'succeeded': 1}
>>> TaskCounts.of(counters(con, "j"))
TaskCounts(active=1, running=0, completed=1, succeeded=1, failed=0, blocked=0, cancelled=0)
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Mapping

from ..states import TERMINAL_TASK_STATES, TaskState

_TRIGGERS = """CREATE TABLE IF NOT EXISTS task_counts(
  job_id TEXT NOT NULL COLLATE NOCASE, state TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY(job_id, state));

CREATE TRIGGER IF NOT EXISTS task_counts_insert AFTER INSERT ON tasks BEGIN
  INSERT INTO task_counts(job_id, state, n) VALUES (NEW.job_id, NEW.state, 1)
    ON CONFLICT(job_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER IF NOT EXISTS task_counts_delete AFTER DELETE ON tasks BEGIN
  UPDATE task_counts SET n = n - 1 WHERE job_id = OLD.job_id AND state = OLD.state;
  DELETE FROM task_counts WHERE job_id = OLD.job_id AND state = OLD.state AND n <= 0;
END;

CREATE TRIGGER IF NOT EXISTS task_counts_update AFTER UPDATE OF state, job_id ON tasks
  WHEN OLD.state IS NOT NEW.state OR OLD.job_id IS NOT NEW.job_id BEGIN
  UPDATE task_counts SET n = n - 1 WHERE job_id = OLD.job_id AND state = OLD.state;
  DELETE FROM task_counts WHERE job_id = OLD.job_id AND state = OLD.state AND n <= 0;
  INSERT INTO task_counts(job_id, state, n) VALUES (NEW.job_id, NEW.state, 1)
    ON CONFLICT(job_id, state) DO UPDATE SET n = n + 1;
END"""


def add_task_counters(con: sqlite3.Connection) -> None:
    """Schema step: the ``task_counts`` table, its triggers, and counts of the tasks already there."""
    for statement in _TRIGGERS.split("\n\n"):
        con.execute(statement)
    con.execute("DELETE FROM task_counts")
    con.execute("INSERT INTO task_counts(job_id, state, n) SELECT job_id, state, COUNT(*) FROM tasks "
                "GROUP BY job_id, state")


def counters(con, job_id: str) -> dict[str, int]:
    """``{state: tasks}`` of one job, from its counters (states with no task left out)."""
    return {r[0]: r[1] for r in con.execute(
        "SELECT state, n FROM task_counts WHERE job_id = ? AND n > 0", (job_id,)).fetchall()}


@dataclasses.dataclass(frozen=True)
class TaskCounts:
    """A job's tasks per state, as Azure Batch's ``TaskCounts`` reads them, plus batchnb's own.

    ``active`` holds the tasks waiting to run, whether for a node or for their
    dependencies (batchnb's ``pending`` and ``active``; Azure counts both as
    active). ``completed`` is every task that ended: ``succeeded + failed +
    blocked + cancelled`` (Azure's completed is succeeded + failed, and has no
    blocked or cancelled task).

    >>> import batchnb as bnb
    >>> c = bnb.TaskCounts.of({"pending": 1, "active": 2, "succeeded": 3, "blocked": 1})
    >>> c.active, c.completed, c.total
    (3, 4, 7)
    """

    active: int = 0
    running: int = 0
    completed: int = 0
    succeeded: int = 0
    failed: int = 0
    blocked: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, by_state: Mapping[str, int]) -> "TaskCounts":
        """From ``{state word: tasks}`` (what ``job.counts()`` returns)."""
        get = lambda s: int(by_state.get(s.value, 0))   # noqa: E731
        return cls(active=get(TaskState.PENDING) + get(TaskState.ACTIVE), running=get(TaskState.RUNNING),
                   completed=sum(get(s) for s in TERMINAL_TASK_STATES), succeeded=get(TaskState.SUCCEEDED),
                   failed=get(TaskState.FAILED), blocked=get(TaskState.BLOCKED), cancelled=get(TaskState.CANCELLED))

    @property
    def total(self) -> int:
        """Every task of the job."""
        return self.active + self.running + self.completed

    @property
    def live(self) -> int:
        """Tasks not yet ended: what ``job.wait()`` waits for."""
        return self.active + self.running


@dataclasses.dataclass(frozen=True)
class JobStats:
    """How a job ran, from its attempts (seconds and bytes).

    ``wall_clock`` runs from its first attempt's start to its last attempt's
    end (to now while one runs); ``task_seconds`` sums every attempt's run
    time; ``wait_seconds`` sums, per task that ran, the time from its being
    added to its first attempt's start; ``retries`` counts attempts that ended
    in a retry, ``requeues`` those a lost node gave back.

    >>> import batchnb as bnb
    >>> bnb.JobStats(wall_clock=2.0, task_seconds=3.0).parallelism
    1.5
    """

    wall_clock: float = 0.0
    task_seconds: float = 0.0
    wait_seconds: float = 0.0
    retries: int = 0
    requeues: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    attempts: int = 0
    first_start: float | None = None
    last_end: float | None = None

    @property
    def parallelism(self) -> float:
        """Task time per second of wall clock: how many tasks ran at once, on average."""
        return self.task_seconds / self.wall_clock if self.wall_clock > 0 else 0.0


_LAST = ", ".join(f"'{s.value}'" for s in ({TaskState.RUNNING} | (TERMINAL_TASK_STATES - {TaskState.BLOCKED})))


def _one(source, sql: str, params: tuple):
    """One row from a connection or a :class:`~batchnb.engine.ledger.Ledger` (its reader)."""
    return source._query(sql, params)[0] if hasattr(source, "_query") else source.execute(sql, params).fetchone()


def first_starts(source, job_id: str) -> dict[str, float]:
    """``{task id: its first attempt's start}`` of the tasks of a job that ran."""
    rows = (source._query if hasattr(source, "_query") else lambda q, p: source.execute(q, p).fetchall())(
        "SELECT task_id, MIN(start) FROM attempts WHERE job_id = ? AND start IS NOT NULL GROUP BY task_id", (job_id,))
    return {r[0]: r[1] for r in rows}


def task_frame(infos, starts: Mapping[str, float]):
    """``job.frame()``: rows of ``job.tasks()`` indexed by task id, times as UTC Timestamps,
    ``started`` (first attempt's start), ``duration`` (started to ended, a Timedelta) and
    exit codes as nullable integers (``Int64``)."""
    import pandas as pd
    rows = [dict(dataclasses.asdict(i), started=starts.get(i.id)) for i in infos]
    columns = [f.name for f in dataclasses.fields(infos[0])] + ["started"] if infos else ["id", "started"]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("created", "started", "ended"):
        if col in df:
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    if "ended" in df:
        df["duration"] = df["ended"] - df["started"]
    for col in ("exit_code", "attempts", "requeues"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df.set_index("id")


def job_stats(source, job_id: str, now: float | None = None) -> JobStats:
    """A job's :class:`JobStats`, in three aggregate queries (``source``: a ledger or a connection)."""
    now = time.time() if now is None else now
    a = _one(source, 
        "SELECT MIN(start), MAX(end), SUM(CASE WHEN start IS NOT NULL THEN COALESCE(end, ?) - start END), "
        "SUM(COALESCE(bytes_in, 0)), SUM(COALESCE(bytes_out, 0)), COUNT(*), "
        "SUM(CASE WHEN start IS NOT NULL AND end IS NULL THEN 1 ELSE 0 END) FROM attempts WHERE job_id = ?",
        (now, job_id))
    first, last, task_s, b_in, b_out, n, running = a
    # A task's attempts: each was requeued, retried, or is its live or final one.
    t = _one(source,
        "SELECT SUM(requeues), SUM(MAX(0, attempts - requeues - "
        f"CASE WHEN attempts > 0 AND state IN ({_LAST}) THEN 1 ELSE 0 END)) FROM tasks WHERE job_id = ?",
        (job_id,))
    wait = _one(source, 
        "SELECT SUM(MAX(0, a.start - t.created)) FROM attempts a JOIN tasks t ON t.job_id = a.job_id AND t.id = a.task_id "
        "WHERE a.job_id = ? AND a.start IS NOT NULL AND a.n = (SELECT MIN(n) FROM attempts b WHERE "
        "b.job_id = a.job_id AND b.task_id = a.task_id AND b.start IS NOT NULL)", (job_id,))[0]
    end = now if running else last
    wall = max(0.0, (end or 0.0) - first) if first is not None and end is not None else 0.0
    return JobStats(wall_clock=wall, task_seconds=float(task_s or 0.0), wait_seconds=float(wait or 0.0),
                    retries=int(t[1] or 0), requeues=int(t[0] or 0), bytes_in=int(b_in or 0),
                    bytes_out=int(b_out or 0), attempts=int(n or 0), first_start=first, last_end=last)
