"""Terminal progress for scripts: a tqdm bar fed by the job's events.

In a Jupyter kernel the widget shows progress instead, so nothing is drawn
here; ``quiet=True`` turns it off anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import sys

log = logging.getLogger("batchnb")


def in_kernel() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and hasattr(ip, "kernel")


def describe(counts: dict) -> str:
    order = ("running", "active", "pending", "succeeded", "failed", "blocked", "cancelled")
    return " ".join(f"{s}={counts[s]}" for s in order if counts.get(s))


@contextlib.contextmanager
def waiting(job, quiet: bool | None):
    """Draw progress while the caller waits on ``job``; the final summary is logged."""
    if quiet or (quiet is None and in_kernel()) or job.pool is None:
        yield
        return
    from tqdm.auto import tqdm
    counts = job.counts()
    total = sum(counts.values())
    bar = tqdm(total=total, desc=job.id, unit="task", file=sys.stderr, dynamic_ncols=True, leave=True)

    def update(_events):
        c = job.counts()
        done = sum(c.get(s, 0) for s in ("succeeded", "failed", "blocked", "cancelled"))
        bar.total = sum(c.values())
        bar.n = done
        bar.set_postfix_str(describe(c), refresh=False)
        bar.refresh()

    sub = job.pool.bus.subscribe(update, interval=0.2, job_id=job.id)
    try:
        update(None)
        yield
    finally:
        sub.close()
        update(None)
        bar.close()
