"""Module-level functions of the public API: the ledger's history, pruning, and
what the CLI needs to act on jobs that no process of its own drives."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from ..errors import SpecError, WaitTimeout
from ..states import FAILED_TASK_STATES, LIVE_TASK_STATES
from .ledger import Ledger, default_ledger, owner_id

if TYPE_CHECKING:
    from datetime import timedelta


def current_ledger() -> Ledger:
    """The ledger this process uses by default (``<home>/ledger.sqlite``)."""
    return default_ledger()


def jobs(ledger: Ledger | None = None) -> list[dict]:
    """Every job in the ledger, oldest first: id, pool, state, reason, created, ended, counts."""
    ledger = ledger or current_ledger()
    out = []
    for row in ledger.jobs():
        out.append({"id": row["id"], "pool": row["pool"], "state": row["state"], "reason": row["reason"],
                    "created": row["created"], "ended": row["ended"], "counts": ledger.task_counts(row["id"])})
    return out


def prune(older_than: str | float | timedelta | None = "7d", ledger: Ledger | None = None, *,
          keep_last: int | None = None, dry_run: bool = False) -> list[str]:
    """Remove finished jobs that ended more than ``older_than`` ago (Azure keeps tasks 7 days).

    What it keeps: every job that is not finished (a task still pending,
    active or running), every job a live process dispatches, every job that
    finished within ``older_than``, and with ``keep_last=N`` the N jobs that
    finished last whatever their age (``older_than=None`` with ``keep_last``:
    all but the last N). What goes, for each removed job: its task working
    directories, its large Python results and its ledger rows (the audit
    trail keeps one line saying so); in every job, task directories past
    their ``retention_time`` (7 days when a task sets none). Then the Python
    arguments stored by reference that no remaining task uses go, and the
    ledger file is compacted (VACUUM, write-ahead log truncated), so it
    really shrinks. Returns the removed job ids.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1) as pool:
    ...     job = pool.job("nightly")
    ...     t = job.add_task("t1", "echo done")
    ...     print(job.wait(quiet=True))
    job nightly: all_tasks_complete in ...s (1 succeeded)
    >>> bnb.prune(older_than="7d")          # it ended moments ago: kept
    []
    >>> bnb.prune(older_than=0)             # finished, and no live process dispatches it
    ['nightly']
    >>> [j["id"] for j in bnb.jobs()]
    []
    """
    from .retention import prune as _prune
    return _prune(older_than, ledger or current_ledger(), keep_last=keep_last, dry_run=dry_run)


def job_row(ledger: Ledger, job_id: str) -> dict:
    row = ledger.job(job_id)
    if row is None:
        raise SpecError("job id", job_id, f"not in the ledger {ledger.path}")
    return row


def summary(job_id: str, ledger: Ledger | None = None) -> dict:
    """A job's state, counts, failures, wall time and lease holder, for ``batchnb show``."""
    ledger = ledger or current_ledger()
    row = job_row(ledger, job_id)
    counts = ledger.task_counts(row["id"])
    failures = []
    for r in ledger.tasks(row["id"], ("id", "state", "exit_code", "failure"), states=FAILED_TASK_STATES):
        f = json.loads(r["failure"]) if r["failure"] else {}
        failures.append({"task_id": r["id"], "state": r["state"], "exit_code": r["exit_code"],
                         "category": f.get("category"), "message": f.get("message")})
    live = sum(counts.get(s, 0) for s in LIVE_TASK_STATES)
    ends = ledger.last_task_end(row["id"])
    ended = row["ended"] or (ends if live == 0 and ends else None)
    return {"id": row["id"], "pool": row["pool"], "state": row["state"], "reason": row["reason"],
            # The state word is the job's own (active, terminating, completed); that no task is
            # left to run is a fact beside it: a "noaction" job stays active after its tasks ended.
            "created": row["created"], "ended": ended, "all_tasks_complete": live == 0,
            "wall_time": (ended or time.time()) - row["created"], "counts": counts, "total": sum(counts.values()),
            "failures": failures, "dispatched_by": ledger.lease(row["id"])}


def terminate_job(job_id: str, ledger: Ledger | None = None, reason: str = "terminated",
                  timeout: float = 30.0) -> dict:
    """End a job from any process.

    When a live process dispatches the job, it is asked to (through the
    ledger; it acts within ``min(lease-ttl / 3, 2 s)``) and kills the running
    tasks; otherwise the job is ended in the ledger at once: unfinished tasks
    are cancelled and its running attempts recorded as terminated. Returns
    the job's summary.
    """
    ledger = ledger or current_ledger()
    row = job_row(ledger, job_id)
    if row["state"] == "completed":
        return summary(job_id, ledger)
    owner = owner_id()
    deadline = time.monotonic() + timeout
    asked = False
    while True:
        holder = ledger.acquire_lease(row["id"], owner, ttl=max(timeout, 30.0))
        if holder is None:
            try:
                if ledger.job(row["id"])["state"] != "completed":
                    _kill_orphans(ledger, row)
                    _terminate_in_ledger(ledger, row["id"], reason)
            finally:
                ledger.release_lease(row["id"], owner)
            return summary(row["id"], ledger)
        if not asked:
            ledger.audit("terminate-request", row["id"], reason, actor=owner)
            asked = True
        if ledger.job(row["id"])["state"] == "completed":
            return summary(row["id"], ledger)
        if time.monotonic() > deadline:
            raise WaitTimeout(f"job {job_id!r} is dispatched by {holder}, which did not end it within {timeout}s")
        time.sleep(0.1)   # the holder acts on its next lease renewal


def _kill_orphans(ledger: Ledger, row: dict) -> None:
    """The dead driver's task processes run in sessions of their own: end them with the job."""
    from .jobops import kill_leftovers
    running = {(a["task_id"].lower(), str(a["n"])) for a in ledger.attempts(row["id"]) if a["state"] == "running"}
    if running:
        kill_leftovers(row["pool"], row["id"], running)


def _terminate_in_ledger(ledger: Ledger, job_id: str, reason: str) -> None:
    """What the dispatcher's terminate records, for a job no process dispatches."""
    ledger.terminate_job_records(job_id, reason, time.time())
