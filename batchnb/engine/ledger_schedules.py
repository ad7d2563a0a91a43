"""The ledger's records of job schedules: the schedules, and what became of each due run.

A :class:`~batchnb.engine.ledger.Ledger` inherits these from
:class:`ScheduleRecords`, so no SQL is written outside the ledger's modules.
A schedule belongs to a pool by name: a pool made again with that name (or a
detached agent that restarts) runs it again.

>>> import tempfile, os
>>> from batchnb.engine.ledger import Ledger
>>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
>>> led.create_schedule("nightly", "local", {"id": "nightly"}, None, now=0.0, next_due=10.0)
>>> led.schedule_run("nightly", due=10.0, now=10.5, outcome="started", job_id="nightly-job-1")
>>> [r["job_id"] for r in led.schedule_runs("nightly")], led.schedule("nightly")["started"]
(['nightly-job-1'], 1)
"""

from __future__ import annotations

import time

from ..errors import SpecError
from ..states import JobState, ScheduleRunOutcome, ScheduleState

_COLUMNS = ("state", "next_due", "pending", "spec", "builder")


class ScheduleRecords:
    """Schedule rows and their runs (mixed into the Ledger, which supplies ``_tx`` and ``_query``)."""

    def create_schedule(self, name: str, pool: str, spec: dict, builder: bytes | None, now: float,
                        next_due: float | None) -> None:
        """Record a new schedule of ``pool``; its jobs' numbers continue after any job already named like them."""
        import json
        with self._tx() as con:
            row = con.execute("SELECT pool FROM schedules WHERE name = ?", (name,)).fetchone()
            if row is not None:
                raise SpecError("schedule name", name, f"a schedule of this name exists (pool {row[0]!r}); "
                                                       "delete it first, or pick another name")
            # A schedule deleted and made again keeps the old one's jobs: its numbers go on after them.
            prefix = f"{name}-job-"
            taken = [r[0][len(prefix):] for r in con.execute(
                "SELECT id FROM jobs WHERE substr(lower(id), 1, ?) = lower(?)", (len(prefix), prefix))]
            started = max([int(n) for n in taken if n.isdigit()], default=0)
            con.execute("INSERT INTO schedules(name, pool, spec, builder, state, created, next_due, pending, "
                        "started, updated) VALUES (?,?,?,?,?,?,?,NULL,?,?)",
                        (name, pool, json.dumps(spec), builder, ScheduleState.ACTIVE.value, now, next_due, started,
                         now))

    def schedule(self, name: str) -> dict | None:
        rows = self._query("SELECT * FROM schedules WHERE name = ?", (name,))
        return dict(rows[0]) if rows else None

    def schedules(self, pool: str | None = None) -> list[dict]:
        """Every schedule (of ``pool`` when given), oldest first."""
        if pool is None:
            return [dict(r) for r in self._query("SELECT * FROM schedules ORDER BY created, name")]
        return [dict(r) for r in self._query("SELECT * FROM schedules WHERE pool = ? ORDER BY created, name",
                                             (pool,))]

    def update_schedule(self, name: str, **cols) -> None:
        bad = set(cols) - set(_COLUMNS)
        if bad:
            raise ValueError(f"update_schedule: unknown columns {sorted(bad)}")
        sets = ", ".join(f"{c} = ?" for c in cols)
        with self._tx() as con:
            con.execute(f"UPDATE schedules SET {sets}, updated = ? WHERE name = ?",
                        (*cols.values(), time.time(), name))

    def schedule_run(self, name: str, due: float, now: float, outcome: str, job_id: str | None = None,
                     reason: str | None = None, count: int = 1, **cols) -> None:
        """Record what became of a due run (and, in the same transaction, the schedule's ``cols``);
        a started run counts towards the schedule's job numbers."""
        bad = set(cols) - set(_COLUMNS)
        if bad:
            raise ValueError(f"schedule_run: unknown columns {sorted(bad)}")
        with self._tx() as con:
            seq = con.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM schedule_runs WHERE schedule = ?",
                              (name,)).fetchone()[0]
            con.execute("INSERT INTO schedule_runs(schedule, seq, due, time, outcome, job_id, reason, count) "
                        "VALUES (?,?,?,?,?,?,?,?)", (name, seq, due, now, outcome, job_id, reason, count))
            started = 1 if outcome == ScheduleRunOutcome.STARTED.value else 0
            sets = "".join(f", {c} = ?" for c in cols)
            con.execute(f"UPDATE schedules SET started = started + ?, updated = ?{sets} WHERE name = ?",
                        (started, now, *cols.values(), name))

    def schedule_runs(self, name: str) -> list[dict]:
        """Every recorded run of the schedule, in order: ``seq, due, time, outcome, job_id, reason, count``."""
        return [dict(r) for r in self._query("SELECT * FROM schedule_runs WHERE schedule = ? ORDER BY seq",
                                             (name,))]

    def schedule_active_jobs(self, name: str) -> list[str]:
        """The ids of the schedule's jobs that have not completed (what ``max_active`` counts)."""
        return [r[0] for r in self._query(
            "SELECT j.id FROM schedule_runs r JOIN jobs j ON j.id = r.job_id "
            "WHERE r.schedule = ? AND r.job_id IS NOT NULL AND j.state != ? ORDER BY r.seq",
            (name, JobState.COMPLETED.value))]

    def delete_schedule(self, name: str) -> None:
        """Forget the schedule and its run records (its jobs stay in the ledger, with their tasks)."""
        with self._tx() as con:
            con.execute("DELETE FROM schedule_runs WHERE schedule = ?", (name,))
            con.execute("DELETE FROM schedules WHERE name = ?", (name,))
