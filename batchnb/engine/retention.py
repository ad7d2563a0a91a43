"""Retention: a task's working directories go after its ``retention_time``;
``bnb.prune`` removes finished jobs (their directories, results and ledger rows).

As in Azure Batch, ``retention_time`` counts from the end of the task, and a
task without one keeps its directories 7 days (``batchnb.retention-time``,
Azure's default). A succeeded attempt whose folder holds nothing leaves none
at all (:mod:`batchnb.node.taskdir`). A live pool removes the directories
itself (:class:`RetentionExtension`); a directory whose pool stopped before
its time came is removed by the next ``bnb.prune()``. Only paths shaped like
a task directory (``.../workitems/<job>/<task>/<attempt>``) are ever
removed, whatever the ledger says.

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

from ..errors import SpecError
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


def default_retention() -> float:
    """How long a task without a ``retention_time`` keeps its directories: ``batchnb.retention-time``
    (7 days, as Azure)."""
    from .. import _config
    return _config.seconds("retention-time")


def expired(ledger: Ledger, now: float, job_id: str | None = None, task_id: str | None = None) -> list[dict]:
    """Attempts with a directory whose task ended more than its ``retention_time`` ago."""
    out = []
    default = default_retention()
    for row in ledger.ended_task_dirs(job_id, task_id):
        keep = json.loads(row["spec"]).get("retention_time")
        if row["ended"] + (default if keep is None else keep) <= now:
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


def _unreferenced_args(ledger: Ledger, now: float, grace: float = 3600.0) -> None:
    """Remove stored Python arguments no task in the ledger refers to any more.

    Files younger than ``grace`` stay: a task being added now stores its
    arguments before the ledger holds it.
    """
    import base64
    from .. import _config
    from ..staging.argstore import ARGS_DIR, referenced
    import fsspec
    base = _config.get("results-url") or (_config.home() / "results").as_uri()
    try:
        fs, path = fsspec.core.url_to_fs(f"{base.rstrip('/')}/{ARGS_DIR}")
        if not fs.exists(path):
            return
        keep: set[str] = set()
        for text in ledger.python_task_specs():
            payload = (json.loads(text).get("python") or {}).get("payload")
            if payload:
                keep |= referenced(base64.b64decode(payload))
        for info in fs.ls(path, detail=True):
            name = info["name"].rsplit("/", 1)[-1]
            modified = info.get("mtime") or info.get("last_modified") or info.get("created") or now
            modified = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
            if name.endswith(".pkl") and name[:-4] not in keep and modified < now - grace:
                fs.rm(info["name"])
    except Exception as exc:  # noqa: BLE001 - arguments elsewhere may need credentials we do not hold
        log.warning("batchnb prune: could not remove unused stored arguments under %s: %s", base, exc)


def prune(older_than="7d", ledger: Ledger | None = None, *, keep_last: int | None = None,
          now: float | None = None, dry_run: bool = False) -> list[str]:
    """Remove finished jobs that ended more than ``older_than`` ago; apply tasks' ``retention_time``.

    A finished job is a completed one, or one whose every task has ended; a
    job a live process dispatches is never removed, nor one still running.
    ``keep_last=N`` keeps the N jobs that finished last whatever their age;
    ``older_than=None`` removes finished jobs of any age (with ``keep_last``,
    all but the last N). A removed job's task directories, large Python
    results and ledger rows go; the audit trail keeps a line saying so.
    Stored Python arguments no remaining task refers to go too, and the
    ledger file is compacted (VACUUM, then its write-ahead log truncated),
    so that it shrinks on disk. Returns the ids of the removed jobs.
    """
    if ledger is None:
        ledger = default_ledger()
    keep = duration(older_than, "older_than")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0):
        raise SpecError("keep_last", keep_last, "expected a number of jobs, 0 or more")
    now = time.time() if now is None else now
    if not dry_run:
        apply_retention(ledger, now)
    finished = []
    for row in ledger.jobs():
        ended = _finished_at(ledger, row)
        if ended is not None and ledger.lease(row["id"], now=now) is None:
            finished.append((ended, row["id"]))
    finished.sort()
    if keep_last:
        finished = finished[:-keep_last]
    pruned = [(ended, job_id) for ended, job_id in finished if keep is None or ended <= now - keep]
    if dry_run:
        return [job_id for _, job_id in pruned]
    for ended, job_id in pruned:
        remove_task_dirs([a["task_dir"] for a in ledger.attempts(job_id) if a["task_dir"]])
        _remove_results(job_id)
        ledger.delete_job(job_id)
        ledger.audit("prune", job_id, f"finished {time.strftime('%Y-%m-%d %H:%M', time.gmtime(ended))} UTC")
    if pruned:
        _unreferenced_args(ledger, now)
        if not ledger.reclaim():
            log.info("batchnb prune: the ledger %s is in use; its file shrinks at the next prune", ledger.path)
    return [job_id for _, job_id in pruned]
