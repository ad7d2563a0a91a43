"""Retention: a task's working directories go after its ``retention_time``;
``bnb.prune`` removes finished jobs (their directories, results and ledger rows).

As in Azure Batch, ``retention_time`` counts from the end of the task. A
live pool removes the directories itself (:class:`RetentionExtension`); a
directory whose pool stopped before its time came is removed by the next
``bnb.prune()``. Only paths shaped like a task directory
(``.../workitems/<job>/<task>/<attempt>``) are ever removed, whatever the
ledger says.

>>> import time
>>> from pathlib import Path
>>> import batchnb as bnb
>>> with bnb.Pool("doc", dedicated=1) as pool:
...     job = pool.job("kept-an-hour")
...     t = job.add_task("t1", "echo made > out.txt", retention_time="1h")
...     result = job.wait(quiet=True)
...     folder = Path(t.attempts[-1]["task_dir"])
>>> sorted(p.name for p in (folder / "wd").iterdir())
['out.txt']
>>> apply_retention(pool.ledger, now=time.time() + 3600)     # an hour later (what bnb.prune() also does)
1
>>> folder.exists(), t.stdout()                              # the ledger keeps the logs' tails
(False, '')
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from ..spec.validate import duration
from ..states import LIVE_TASK_STATES
from .ledger import Ledger, default_ledger

log = logging.getLogger("batchnb.retention")


def task_dir_path(path: str | None) -> Path | None:
    """``path`` if it is shaped like a task directory, else None (never remove anything else)."""
    if not path:
        return None
    p = Path(path)
    if len(p.parts) >= 5 and p.parts[-4] == "workitems" and p.parts[-1].isdigit() and p.is_absolute():
        return p
    return None


def remove_task_dirs(paths) -> int:
    """Remove task directories (and parents left empty, up to ``workitems``); return how many existed."""
    removed = 0
    for path in map(task_dir_path, paths):
        if path is None or not path.exists():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
        for parent in (path.parent, path.parent.parent):     # <task>/, then <job>/
            try:
                parent.rmdir()
            except OSError:
                break
    return removed


async def remove_task_dirs_soon(paths) -> int:
    """``remove_task_dirs`` for ``client.run(..., wait=False)`` on remote workers."""
    import asyncio
    return await asyncio.get_running_loop().run_in_executor(None, remove_task_dirs, paths)


def expired(ledger: Ledger, now: float, job_id: str | None = None, task_id: str | None = None) -> list[dict]:
    """Attempts with a directory whose task ended more than its ``retention_time`` ago."""
    out = []
    for row in ledger.ended_task_dirs(job_id, task_id):
        keep = json.loads(row["spec"]).get("retention_time")
        if keep is not None and row["ended"] + keep <= now:
            out.append(row)
    return out


def forget_dirs(ledger: Ledger, rows: list[dict]) -> None:
    """Record that these attempts' directories are gone (logs fall back to the recorded tails)."""
    ledger.forget_task_dirs((r["job_id"], r["task_id"], r["n"]) for r in rows)


def apply_retention(ledger: Ledger, now: float | None = None, job_id: str | None = None,
                    task_id: str | None = None, remote=None) -> int:
    """Remove the expired directories; ``remote(paths)`` is asked for those not on this machine."""
    rows = expired(ledger, time.time() if now is None else now, job_id, task_id)
    if not rows:
        return 0
    here = [r["task_dir"] for r in rows if Path(r["task_dir"]).exists()]
    elsewhere = [r["task_dir"] for r in rows if not Path(r["task_dir"]).exists()]
    n = remove_task_dirs(here)
    if elsewhere and remote is not None:
        remote(elsewhere)
    forget_dirs(ledger, rows)
    return n


def _finished_at(ledger: Ledger, row: dict) -> float | None:
    """When the job finished (completed, or every task ended), else None."""
    if row["state"] == "completed":
        return row["ended"] or row["created"]
    counts = ledger.task_counts(row["id"])
    if any(counts.get(s) for s in LIVE_TASK_STATES):
        return None
    ends = ledger.last_task_end(row["id"])
    return ends if ends is not None else row["created"]


def _remove_results(job_id: str) -> None:
    from .. import _config
    import fsspec
    base = _config.get("results-url") or (_config.home() / "results").as_uri()
    try:
        fs, path = fsspec.core.url_to_fs(f"{base.rstrip('/')}/{job_id}")
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as exc:  # noqa: BLE001 - results elsewhere may need credentials we do not hold
        log.warning("batchnb prune: could not remove the results of job %r: %s", job_id, exc)


def prune(older_than="7d", ledger: Ledger | None = None, *, now: float | None = None,
          dry_run: bool = False) -> list[str]:
    """Remove finished jobs that ended more than ``older_than`` ago; apply tasks' ``retention_time``.

    A finished job is a completed one, or one whose every task has ended; a
    job a live process dispatches is never removed. Its task directories,
    its large Python results and its ledger rows go; the audit trail keeps
    a line saying so. Returns the ids of the removed jobs.
    """
    if ledger is None:
        ledger = default_ledger()
    keep = duration(older_than, "older_than", allow_none=False)
    now = time.time() if now is None else now
    if not dry_run:
        apply_retention(ledger, now)
    pruned = []
    for row in ledger.jobs():
        ended = _finished_at(ledger, row)
        if ended is None or ended > now - keep or ledger.lease(row["id"], now=now) is not None:
            continue
        pruned.append(row["id"])
        if dry_run:
            continue
        remove_task_dirs([a["task_dir"] for a in ledger.attempts(row["id"]) if a["task_dir"]])
        _remove_results(row["id"])
        ledger.delete_job(row["id"])
        ledger.audit("prune", row["id"], f"finished {time.strftime('%Y-%m-%d %H:%M', time.gmtime(ended))} UTC")
    return pruned
