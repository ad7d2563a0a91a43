"""The ledger's named questions and changes for readers other than the dispatcher.

The cost replay (:mod:`batchnb.cost.replay`), retention and pruning
(:mod:`batchnb.engine.retention`) and the offline job operations
(:mod:`batchnb.engine.offline`) ask these of a :class:`~batchnb.engine.ledger.Ledger`;
it inherits them from :class:`LedgerQueries`, so that no SQL is written
outside the ledger's modules.

>>> import tempfile, os
>>> from batchnb.engine.ledger import Ledger
>>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
>>> led.create_job("j", {"id": "j"}, pool="local", now=0.0)
>>> led.add_tasks("j", [("a", 0, "{}", "active")], now=0.0)
>>> led.terminate_job_records("j", "terminated", now=5.0)
['a']
>>> led.last_task_end("j"), led.job("j")["state"]
(5.0, 'completed')
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import SpecError
from ..states import LIVE_TASK_STATES, TERMINAL_TASK_STATES
from . import audit, ledger_audit

_LIVE = tuple(sorted(s.value for s in LIVE_TASK_STATES))
_ENDED = tuple(sorted(s.value for s in TERMINAL_TASK_STATES))


def put_array(con, job_id: str, array_id: str, record: str, now: float | None) -> None:
    """Upsert an array's record on an open transaction."""
    con.execute("INSERT INTO task_arrays(job_id, id, spec, created) VALUES (?,?,?,?) "
                "ON CONFLICT(job_id, id) DO UPDATE SET spec = excluded.spec", (job_id, array_id, record, now))


def _one_of(job_id: str | None, pool: str | None) -> tuple[str, str]:
    """The WHERE clause (and its parameter) for one job or every job of a pool."""
    if (job_id is None) == (pool is None):
        raise TypeError("name a job (job_id=...) or a pool (pool=...), not both or neither")
    if job_id is not None:
        return "job_id = ?", job_id
    return "job_id IN (SELECT id FROM jobs WHERE pool = ?)", pool


#: The type of the rows the ledger's queries give (named columns; they do not pickle).
ROW = sqlite3.Row
_read_only = threading.local()       # per thread: ledger path -> a connection SQLite opened read-only


class LedgerQueries:
    """Mixed into :class:`~batchnb.engine.ledger.Ledger`: it provides ``_query`` and ``_tx``."""

    # -- jobs that no process dispatches --------------------------------
    def last_task_end(self, job_id: str) -> float | None:
        """When the job's last task ended (the latest ``tasks.ended``), or None when none has."""
        return self._query("SELECT MAX(ended) FROM tasks WHERE job_id = ?", (job_id,))[0][0]

    def terminate_job_records(self, job_id: str, reason: str, now: float | None = None,
                              actor: str | None = None) -> list[str]:
        """Record the end of a job that no process dispatches, as the dispatcher's terminate would.

        In one transaction: the job's running attempts become ``terminated``,
        its unfinished tasks ``cancelled`` (an event each), the job
        ``completed`` with ``reason`` (an event), and the audit trail says how
        many tasks were cancelled. Returns the ids of the cancelled tasks.
        """
        now = time.time() if now is None else now
        message = f"job ended: {reason}"
        failure = json.dumps({"category": "cancelled", "message": message})
        live = f"({', '.join('?' * len(_LIVE))})"
        with self._tx() as con:
            con.execute("UPDATE attempts SET state = 'terminated', end = ?, category = 'terminated', message = ? "
                        "WHERE job_id = ? AND state = 'running'", (now, message, job_id))
            ids = [r[0] for r in con.execute(f"SELECT id FROM tasks WHERE job_id = ? AND state IN {live}",
                                             (job_id, *_LIVE))]
            con.execute(f"UPDATE tasks SET state = 'cancelled', ended = ?, updated = ?, failure = ? "
                        f"WHERE job_id = ? AND state IN {live}", (now, now, failure, job_id, *_LIVE))
            con.executemany("INSERT INTO events(time, job_id, task_id, kind, state, data) VALUES (?,?,?,?,?,?)",
                            [(now, job_id, t, "task", "cancelled", json.dumps({"reason": message})) for t in ids])
            con.execute("UPDATE jobs SET state = 'completed', reason = ?, ended = ? WHERE id = ?",
                        (reason, now, job_id))
            con.execute("INSERT INTO events(time, job_id, kind, state, data) VALUES (?,?,?,?,?)",
                        (now, job_id, "job", "completed", json.dumps({"reason": reason})))
            # The audit record of this terminate (none dispatches the job to record it), in its transaction.
            con.execute(ledger_audit.INSERT, audit.row("job-terminate", f"job:{job_id}", identity=actor, now=now,
                                                       detail=f"reason: {reason}; tasks cancelled: {len(ids)}"))
        return ids

    def audit_trail(self, job_id: str | None = None, action: str | None = None) -> list[dict]:
        """The audit rows (time, actor, action, job_id, detail), oldest first, of one job and/or action."""
        where, params = [], []
        for column, value in (("job_id", job_id), ("action", action)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time"
        return [dict(r) for r in self._query(sql, tuple(params))]

    # -- retention -------------------------------------------------------
    def ended_task_dirs(self, job_id: str | None = None, task_id: str | None = None) -> list[dict]:
        """Attempts that still have a working directory, of tasks that have ended.

        Each row: ``job_id``, ``task_id``, ``n``, ``task_dir``, and the task's
        ``spec`` (JSON text) and ``ended`` time; of every job, one job, or one
        task of it.
        """
        sql = ("SELECT a.job_id, a.task_id, a.n, a.task_dir, t.spec, t.ended FROM attempts a JOIN tasks t "
               "ON t.job_id = a.job_id AND t.id = a.task_id WHERE a.task_dir IS NOT NULL AND t.ended IS NOT NULL "
               f"AND t.state IN ({', '.join('?' * len(_ENDED))})")
        params: list = list(_ENDED)
        if job_id is not None:
            sql += " AND a.job_id = ?"
            params.append(job_id)
        if task_id is not None:
            sql += " AND a.task_id = ?"
            params.append(task_id)
        return [dict(r) for r in self._query(sql, tuple(params))]

    def forget_task_dirs(self, attempts: Iterable[tuple[str, str, int]]) -> None:
        """Record that these attempts' (``(job_id, task_id, n)``) working directories are gone."""
        with self._tx() as con:
            con.executemany("UPDATE attempts SET task_dir = NULL WHERE job_id = ? AND task_id = ? AND n = ?",
                            list(attempts))

    def python_task_specs(self) -> Iterable[str]:
        """The spec (JSON text) of every Python task, one at a time (``bnb.prune`` looks in them
        for the arguments they keep by reference)."""
        for row in self._con().execute("SELECT spec FROM tasks WHERE instr(spec, '\"python\"') > 0"):
            yield row[0]

        # A map's tasks share one array record (engine/arrays.py): its call and argument chunks.
        import base64
        for (text,) in self._con().execute("SELECT spec FROM task_arrays"):
            rec = json.loads(text)
            kept = base64.b64decode(rec["call"]) + "\n".join(c["url"] for c in rec["chunks"].values()).encode()
            yield json.dumps({"python": {"payload": base64.b64encode(kept).decode("ascii")}})

    # -- task arrays and the ready tasks paged in (engine/arrays.py, engine/taskstore.py) -------
    def array(self, job_id: str, array_id: str) -> str | None:
        """The JSON record of one of the job's task arrays."""
        rows = self._query("SELECT spec FROM task_arrays WHERE job_id = ? AND id = ?", (job_id, array_id))
        return rows[0][0] if rows else None

    def arrays_of(self, job_id: str) -> list[str]:
        """The ids of the job's task arrays (one per ``job.map``), oldest first."""
        return [r[0] for r in self._query("SELECT id FROM task_arrays WHERE job_id = ? ORDER BY created, rowid",
                                          (job_id,))]

    def put_array(self, job_id: str, array_id: str, record: str, now: float | None = None) -> None:
        """Write (or rewrite, as chunks are added) an array's record."""
        with self._tx() as con:
            put_array(con, job_id, array_id, record, now)

    def ready_page(self, job_id: str, after: int, limit: int) -> list:
        """Up to ``limit`` of the job's active tasks after row ``after``, in the order they were
        added (the tasks_state index holds the row id: no sort of a million rows)."""
        return self._query("SELECT rowid, id, seq, spec, attempts, requeues, exit_code, node FROM tasks "
                           "WHERE job_id = ? AND state = 'active' AND rowid > ? ORDER BY rowid LIMIT ?",
                           (job_id, after, limit))

    def tasks_named(self, job_id: str, ids: Iterable[str]) -> list:
        """The job's task rows with these ids (one query, whatever their number)."""
        return self._query("SELECT *, rowid FROM tasks WHERE job_id = ? AND id IN (SELECT value FROM json_each(?))",
                           (job_id, json.dumps(list(ids))))

    def iter_tasks(self, job_id: str) -> Iterable:
        """The job's task rows in the order added, one at a time (a resume of a million tasks
        holds the rows it keeps, not all of them), with ``has_result`` instead of the result."""
        yield from self._con().execute(
            "SELECT id, seq, spec, state, attempts, requeues, exit_code, node, failure, "
            "result IS NOT NULL OR result_url IS NOT NULL AS has_result FROM tasks WHERE job_id = ? ORDER BY seq",
            (job_id,))

    def max_task_seq(self, job_id: str) -> int:
        return self._query("SELECT COALESCE(MAX(seq), -1) FROM tasks WHERE job_id = ?", (job_id,))[0][0]

    def reclaim(self) -> bool:
        """Give the space of deleted rows back to the file system: VACUUM, then truncate the
        write-ahead log. False when another connection kept it from finishing (a reader in
        the middle of a query): the rows are gone all the same, and a later call shrinks it."""
        import sqlite3
        with self._write_lock:
            try:
                con = self._con()
                con.execute("VACUUM")
                busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error:
                return False
        return not busy

    # -- cost ------------------------------------------------------------
    def priced_pool_events(self) -> list[dict]:
        """The ``priced`` events of pools, in the order they were written: ``time`` and ``data``.

        ``data`` (JSON text) is what a pool priced its nodes with when it
        started: pool name, vm size, region, hourly prices, slots per node, tags.
        """
        return [dict(r) for r in self._query(
            "SELECT time, data FROM events WHERE job_id IS NULL AND kind = 'pool' AND state = 'priced' "
            "ORDER BY seq")]

    def metered_attempts(self, job_id: str | None = None, pool: str | None = None) -> list[dict]:
        """The attempts of a job, or of every job of a pool, with what the cost meter needs.

        Each row: ``job_id``, ``task_id``, ``n``, ``node``, ``dispatched``,
        ``start``, ``end``, ``held`` (the slots it held; None in ledgers made
        before that was recorded) and ``slots`` (its task's ``required_slots``).
        """
        _one_of(job_id, pool)
        sql = ("SELECT a.job_id, a.task_id, a.n, a.node, a.dispatched, a.start, a.end, a.slots AS held, "
               "COALESCE(json_extract(t.spec, '$.required_slots'), 1) AS slots "
               "FROM attempts a JOIN tasks t ON t.job_id = a.job_id AND t.id = a.task_id ")
        if job_id is not None:
            rows = self._query(sql + "WHERE a.job_id = ?", (job_id,))
        else:
            rows = self._query(sql + "JOIN jobs j ON j.id = a.job_id WHERE j.pool = ?", (pool,))
        return [dict(r) for r in rows]

    def attempt_collected_times(self, job_id: str | None = None, pool: str | None = None) -> list[dict]:
        """When the dispatcher collected each attempt of a job, or of every job of a pool.

        That is the time of the first task event naming the attempt
        (``data.attempt``) whose state is not ``running``. Each row:
        ``job_id``, ``task_id``, ``n``, ``t``.
        """
        where, param = _one_of(job_id, pool)
        return [dict(r) for r in self._query(
            "SELECT job_id, task_id, CAST(json_extract(data, '$.attempt') AS INTEGER) AS n, MIN(time) AS t "
            f"FROM events WHERE kind = 'task' AND state != 'running' AND data IS NOT NULL AND {where} "
            "GROUP BY job_id, task_id, n", (param,))]

    def job_events(self, job_id: str, kinds: Iterable[str]) -> list[dict]:
        """The job's events of these kinds (e.g. its preparation tasks' runs, ``jobprep``), oldest first."""
        kinds = tuple(kinds)
        marks = ", ".join("?" for _ in kinds)
        return [dict(r) for r in self._query(f"SELECT * FROM events WHERE job_id = ? AND kind IN ({marks}) "
                                             "ORDER BY seq", (job_id, *kinds))]

    def dispatched_before(self, job_id: str, t: float) -> bool:
        """True when an attempt of the job was dispatched before ``t`` (by an earlier pool or process)."""
        return bool(self._query("SELECT 1 FROM attempts WHERE job_id = ? AND dispatched < ? LIMIT 1",
                                (job_id, t)))

    def subtasks(self, job_id: str, task_id: str) -> list[dict]:
        """The instances of a multi-instance task's last attempt, one record each (instance order).

        Each is the latest ``subtask`` event's data for that instance: ``instance``, ``node``,
        ``state``, ``exit_code``, ``stdout``/``stderr`` tails, ``attempt``, ... (see
        :mod:`batchnb.engine.multiinstance`).
        """
        rows = self._query("SELECT data FROM events WHERE job_id = ? AND task_id = ? AND kind = 'subtask' "
                           "ORDER BY seq", (job_id, task_id))
        latest: dict = {}
        for row in rows:
            data = json.loads(row["data"])
            latest[(data["attempt"], data["instance"])] = data
        last = max((a for a, _ in latest), default=None)
        return [latest[k] for k in sorted(latest) if k[0] == last]

    def alert_events(self, pool: str) -> list[dict]:
        """The pool's alert rules and their firings and resolutions, oldest first.

        Events of kind ``alert_rule`` (a rule set with ``pool.alert``) and ``alert``
        (``state`` firing or resolved), not tied to a job; ``data`` decoded.
        """
        rows = self._query("SELECT seq, time, kind, state, data FROM events WHERE job_id IS NULL "
                           "AND kind IN ('alert_rule', 'alert') ORDER BY seq")
        out = []
        for row in rows:
            data = json.loads(row["data"] or "{}")
            if data.get("pool") == pool:
                out.append({**dict(row), "data": data})
        return out

    # -- failures (the job view's drill-down) ----------------------------
    def failure_groups(self, job_id: str, sample: int = 5) -> list[dict]:
        """The job's failed tasks grouped by exit code and failure category, largest group first.

        Each group: ``exit_code``, ``category``, ``count``, ``message`` (one of its
        tasks'), and ``tasks``: up to ``sample`` of them with ``id``, ``node``, ``message``
        and their last attempt's ``stdout``/``stderr`` tails (kept in the ledger after the
        node is gone).
        """
        cat = "json_extract(failure, '$.category')"
        groups = [dict(r) for r in self._query(
            f"SELECT exit_code, {cat} AS category, COUNT(*) AS count, MIN(json_extract(failure, '$.message')) "
            f"AS message FROM tasks WHERE job_id = ? AND state = 'failed' GROUP BY exit_code, {cat} "
            "ORDER BY count DESC, exit_code", (job_id,))]
        rows = self._query(
            f"SELECT * FROM (SELECT t.id, t.exit_code, {cat} AS category, t.node, json_extract(t.failure, "
            "'$.message') AS message, a.stdout_tail AS stdout, a.stderr_tail AS stderr, ROW_NUMBER() OVER "
            f"(PARTITION BY t.exit_code, {cat} ORDER BY t.seq) AS k FROM tasks t LEFT JOIN attempts a "
            "ON a.job_id = t.job_id AND a.task_id = t.id AND a.n = t.attempts WHERE t.job_id = ? AND "
            "t.state = 'failed') WHERE k <= ?", (job_id, sample))
        for g in groups:
            g["tasks"] = [{k: r[k] for k in ("id", "node", "message", "stdout", "stderr")} for r in rows
                          if r["exit_code"] == g["exit_code"] and r["category"] == g["category"]]
        return groups

    def reactivations(self, job_id: str) -> dict[str, int]:
        """Task id (lower case) -> the attempt number it had when last reactivated: the failed
        attempts up to it no longer count against its retries (a resumed job keeps the reset)."""
        return {r[0].lower(): r[1] for r in self._query(
            "SELECT task_id, MAX(CAST(json_extract(data, '$.attempt') AS INTEGER)) FROM events WHERE job_id = ? "
            "AND kind = 'task' AND state = 'active' AND json_extract(data, '$.reason') = 'reactivated' "
            "GROUP BY task_id", (job_id,))}

    # -- timeline (the job view's lanes of attempts) ----------------------
    def timeline(self, job_id: str, since: float | None = None, until: float | None = None, bins: int = 400,
                 raw_limit: int = 2000) -> dict:
        """The job's attempts per node lane, for a timeline: bars when few, counts in time bins when many.

        Of the attempts that overlap ``[since, until]`` (the whole job by default).
        Returns ``t0``, ``t1`` (the span shown), ``lanes`` (node ids, of the whole job,
        so that lanes stay put when zoomed), ``count`` and either ``bars``
        (``[lane, task id, attempt, start, end, outcome]``, when at most ``raw_limit``)
        or ``bins`` (``[lane, bin, outcome, count]``, ``outcome`` an index into
        ``outcomes``, bin ``i`` starting at ``t0 + i * width``; at most lanes x ``bins``
        x outcomes rows, whatever the job's size). An outcome is the attempt's: succeeded, failed, requeued,
        preempted (requeued as its node was preempted), running, interrupted or
        terminated. Grouped in SQL: 100,000 attempts never become rows here.
        """
        outcome = ("CASE WHEN a.state = 'requeued' AND EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = a.node "
                   "AND n.state = 'preempted' AND n.time BETWEEN a.end - 2 AND a.end + 2) THEN 'preempted' "
                   "ELSE a.state END")
        begin, finish = "COALESCE(a.start, a.dispatched)", "COALESCE(a.end, a.start, a.dispatched)"
        lanes = [r[0] for r in self._query("SELECT DISTINCT COALESCE(node, '') FROM attempts WHERE job_id = ? "
                                           "ORDER BY 1", (job_id,))]
        where, params = f"a.job_id = ? AND {begin} IS NOT NULL", [job_id]
        if since is not None:
            where += f" AND {finish} >= ?"
            params.append(since)
        if until is not None:
            where += f" AND {begin} <= ?"
            params.append(until)
        first, last, count = self._query(f"SELECT MIN({begin}), MAX({finish}), COUNT(*) FROM attempts a "
                                         f"WHERE {where}", tuple(params))[0]
        t0 = since if since is not None else first
        t1 = until if until is not None else last
        out: dict = {"t0": t0, "t1": t1, "lanes": lanes, "count": count}
        lane = {name: i for i, name in enumerate(lanes)}
        if count <= raw_limit:
            rows = self._query(f"SELECT COALESCE(a.node, ''), a.task_id, a.n, {begin}, a.end, {outcome} "
                               f"FROM attempts a WHERE {where} ORDER BY 4", tuple(params))
            return {**out, "bars": [[lane[r[0]], r[1], r[2], r[3], r[4], r[5]] for r in rows]}
        width = max((t1 - t0) / bins, 1e-6)
        rows = self._query(f"SELECT COALESCE(a.node, ''), MIN(?, MAX(0, CAST(({begin} - ?) / ? AS INTEGER))), "
                           f"{outcome}, COUNT(*) FROM attempts a WHERE {where} GROUP BY 1, 2, 3",
                           (bins - 1, t0, width, *params))
        outcomes: dict[str, int] = {}     # each name once: the bins hold its index
        cells = [[lane[r[0]], r[1], outcomes.setdefault(r[2], len(outcomes)), r[3]] for r in rows]
        return {**out, "width": width, "outcomes": list(outcomes), "bins": cells}

    def read_only_query(self, sql: str, params: list | tuple = ()) -> list:
        """``sql``, a SELECT someone else wrote (a detached pool's client, ``agent/reads.py``), on a
        connection SQLite opened read-only: a statement that would change the ledger fails there."""
        if not isinstance(sql, str) or not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise SpecError("sql", str(sql)[:60], "a reader may only ask SELECT queries of the ledger")
        cons = _read_only.__dict__.setdefault("cons", {})
        con = cons.get(str(self.path))
        if con is None:
            con = sqlite3.connect(f"{Path(self.path).as_uri()}?mode=ro", uri=True, timeout=30.0)
            con.execute("PRAGMA query_only=ON")
            con.row_factory = sqlite3.Row
            cons[str(self.path)] = con
        return con.execute(sql, tuple(params)).fetchall()
