"""A turn's writes (:class:`Batch`), and how they go into the ledger in one transaction.

A turn of the dispatcher writes a few rows per task it starts or ends, and a
bundle's turn thousands; they go in with a few ``executemany`` calls instead of
one statement each:

- the updates of one task row between two statements that may read task rows
  (``cancel_waiting``) are one update of the columns they set, the last value
  winning (the counters' triggers see the same first and last state), and the
  updates between two such statements go in grouped by the columns they set
  (updates of distinct rows commute);
- the upserts of one attempt row are one upsert of the columns they set
  (attempts have no triggers and nothing in a batch reads them);
- event rows are inserted last, in the order made (nothing in a batch reads them).
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

from ..errors import LedgerError

TASK_COLUMNS = ("state", "attempts", "requeues", "exit_code", "node", "failure", "result", "result_url",
                "updated", "ended")
ATTEMPT_COLUMNS = ("node", "state", "dispatched", "start", "end", "exit_code", "category", "message", "task_dir",
                   "bytes_in", "bytes_out", "stage_in_seconds", "stage_out_seconds", "stdout_tail", "stderr_tail",
                   "slots")

_TASK_SET, _ATTEMPT_SET = frozenset(TASK_COLUMNS), frozenset(ATTEMPT_COLUMNS)


class Batch:
    """The writes of one turn of the dispatcher, committed together."""

    def __init__(self):
        self.statements: list[tuple[str, tuple]] = []
        self.job_of: dict[int, str] = {}     # statement index -> job id, for the lease fence
        self.attempts: dict[tuple, dict] = {}                # (job id, task id, n) -> columns
        self.events: list[tuple[tuple, str | None]] = []     # (params, job id)
        self.tasks: dict[tuple, dict] = {}                   # (job id, task id) -> columns, since the last
                                                             # statement that reads task rows

    def __bool__(self):
        return bool(self.statements or self.attempts or self.events or self.tasks)

    def _add(self, sql: str, params: tuple, job_id: str | None) -> None:
        if job_id is not None:
            self.job_of[len(self.statements)] = job_id
        self.statements.append((sql, params))

    def task(self, job_id: str, task_id: str, **cols: Any) -> None:
        if not _TASK_SET.issuperset(cols):
            raise LedgerError(f"unknown task columns {sorted(set(cols) - _TASK_SET)}")
        self.tasks.setdefault((job_id, task_id), {}).update(cols)

    def _tasks_out(self) -> None:
        """Write the task updates gathered so far into the ordered statements, grouped by columns."""
        groups: dict[tuple, list] = {}
        for key, cols in self.tasks.items():
            groups.setdefault(tuple(cols), []).append((key, cols))
        for names, rows in groups.items():
            sql = _task_sql(names)
            for (job_id, task_id), cols in rows:
                self._add(sql, (*cols.values(), job_id, task_id), job_id)
        self.tasks.clear()

    def attempt(self, job_id: str, task_id: str, n: int, **cols: Any) -> None:
        """Insert attempt ``n`` or update the columns given."""
        if not _ATTEMPT_SET.issuperset(cols):
            raise LedgerError(f"unknown attempt columns {sorted(set(cols) - _ATTEMPT_SET)}")
        self.attempts.setdefault((job_id, task_id, n), {}).update(cols)

    def event(self, t: float, kind: str, job_id: str | None = None, task_id: str | None = None,
              state: str | None = None, data: dict | str | None = None) -> None:
        """An event row; ``data`` a dict, or JSON text already made (see :func:`attempt_data`)."""
        if data and not isinstance(data, str):
            data = json.dumps(data)
        self.events.append(((t, job_id, task_id, kind, state, data or None), job_id))

    def job(self, job_id: str, **cols: Any) -> None:
        allowed = {"state", "reason", "ended", "spec", "tags"}
        if set(cols) - allowed:
            raise LedgerError(f"unknown job columns {sorted(set(cols) - allowed)}")
        sets = ", ".join(f"{c} = ?" for c in cols)
        self._add(f"UPDATE jobs SET {sets} WHERE id = ?", (*cols.values(), job_id), job_id)

    def release_lease(self, job_id: str, owner: str) -> None:
        """Release the job's lease with the rest of this batch (e.g. with its completion), so
        no other process sees the job unleased and not yet completed."""
        self._add("UPDATE jobs SET lease_owner = NULL, lease_expires = NULL WHERE id = ? AND lease_owner = ?",
                  (job_id, owner), None)

    def cancel_waiting(self, job_id: str, now: float, failure: str) -> None:
        """Cancel, with this batch, the job's tasks still active or pending in the ledger (those
        waiting there alone, never loaded, as well as any the batch has not ended yet)."""
        self._tasks_out()
        self._add("UPDATE tasks SET state = 'cancelled', updated = ?, ended = ?, failure = ? "
                  "WHERE job_id = ? AND state IN ('active', 'pending')", (now, now, failure, job_id), job_id)

    def node(self, pool: str, node_id: str, group: str, state: str, t: float) -> None:
        self.statements.append(("INSERT INTO nodes(pool, node_id, grp, state, time) VALUES (?,?,?,?,?)",
                                (pool, node_id, group, state, t)))

    def jobs(self) -> set:
        """The jobs this batch writes to (for the lease fence)."""
        out = set(self.job_of.values()) | {k[0] for k in self.attempts} | {e[1] for e in self.events} \
            | {k[0] for k in self.tasks}
        out.discard(None)
        return out

    def clear(self) -> None:
        self.statements.clear()
        self.job_of.clear()
        self.attempts.clear()
        self.events.clear()
        self.tasks.clear()


_quoted = json.encoder.encode_basestring_ascii


def attempt_data(attempt: int, node: str | None, reason: str | None) -> str:
    """A task event's data, as ``json.dumps`` writes the dict (made twice a task, it cost more so).

    >>> import json
    >>> attempt_data(2, "dedicated-0", None) == json.dumps({"attempt": 2, "node": "dedicated-0", "reason": None})
    True
    """
    return (f'{{"attempt": {attempt:d}, "node": {"null" if node is None else _quoted(node)}, '
            f'"reason": {"null" if reason is None else _quoted(reason)}}}')


@functools.lru_cache(maxsize=64)
def _task_sql(cols: tuple) -> str:
    sets = ", ".join(f"{c} = ?" for c in cols)
    return f"UPDATE tasks SET {sets} WHERE job_id = ? AND id = ?"


@functools.lru_cache(maxsize=64)
def _attempt_sql(cols: tuple) -> str:
    names = ", ".join(cols)
    marks = ", ".join("?" for _ in cols)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols)
    return (f"INSERT INTO attempts(job_id, task_id, n, {names}) VALUES (?, ?, ?, {marks}) "
            f"ON CONFLICT(job_id, task_id, n) DO UPDATE SET {updates}")


_EVENT_SQL = "INSERT INTO events(time, job_id, task_id, kind, state, data) VALUES (?,?,?,?,?,?)"


def _runs(rows):
    """(sql, [params...]) of each run of rows with the same statement, in order."""
    out: list = []
    for sql, params in rows:
        if out and out[-1][0] == sql:
            out[-1][1].append(params)
        else:
            out.append((sql, [params]))
    return out

def write_batch(con, batch: Batch, fenced: set) -> None:
    """Execute ``batch`` on ``con`` (in its transaction), skipping the statements of ``fenced`` jobs."""
    batch._tasks_out()
    main = ((sql, params) for i, (sql, params) in enumerate(batch.statements)
            if not fenced or batch.job_of.get(i) not in fenced)
    attempts = sorted(((_attempt_sql(tuple(cols)), (*key, *cols.values())) for key, cols in batch.attempts.items()
                       if not fenced or key[0] not in fenced), key=lambda a: a[0])
    events = ((_EVENT_SQL, params) for params, job in batch.events if not fenced or job not in fenced)
    for sql, rows in _runs(itertools.chain(main, attempts, events)):
        if len(rows) == 1:
            con.execute(sql, rows[0])
        else:
            con.executemany(sql, rows)
