"""Terminal progress for scripts: a tqdm bar fed by the job's events, then a summary.

In a Jupyter kernel the widget shows progress instead, so nothing is drawn
here; ``quiet=True`` turns drawing off anywhere. Whatever is drawn, the
``batchnb`` logger records the wait's start and its summary (INFO), so a
script that configures :mod:`logging` keeps a record without a bar.

>>> describe({"running": 2, "succeeded": 5, "failed": 0})
'running=2 succeeded=5'
"""

from __future__ import annotations

import contextlib
import logging
import sys

from ..states import TASK_STATE_ORDER, TERMINAL_TASK_STATES, TaskState

log = logging.getLogger("batchnb")

# What moves first, then what waits, then what ended: a one-line summary reads from the left.
ORDER = tuple(s.value for s in (TaskState.RUNNING, TaskState.ACTIVE, TaskState.PENDING, *TASK_STATE_ORDER[3:]))
ENDED = tuple(s.value for s in TASK_STATE_ORDER if s in TERMINAL_TASK_STATES)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where the views draw, not the terminal)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and hasattr(ip, "kernel")


def describe(counts: dict) -> str:
    return " ".join(f"{s}={counts[s]}" for s in ORDER if counts.get(s))


def summary(job) -> str:
    """The final summary of a job: counts, failures, cost (``str`` of its JobResult)."""
    return str(job.result())


@contextlib.contextmanager
def waiting(job, quiet: bool | None):
    """Draw progress while the caller waits on ``job``; print and log the summary at the end."""
    draw = not quiet and not (quiet is None and in_kernel()) and job.pool is not None
    log.info("job %s: waiting (%s)", job.id, describe(job.counts()) or "no tasks")
    if not draw:
        try:
            yield
        finally:
            _log_summary(job)
        return
    # tqdm.std, not tqdm.auto: auto would pick the ipywidgets bar in an IPython shell.
    from tqdm.std import tqdm
    counts = job.counts()
    bar = tqdm(total=sum(counts.values()), desc=job.id, unit="task", file=sys.stderr, dynamic_ncols=True,
               leave=True)

    def update(_events):
        c = job.counts()
        bar.total = sum(c.values())
        bar.n = sum(c.get(s, 0) for s in ENDED)
        bar.set_postfix_str(describe(c), refresh=False)
        bar.refresh()

    sub = job.pool.bus.subscribe(update, interval=_interval(), job_id=job.id)
    ok = False
    try:
        update(None)
        yield
        ok = True
    finally:
        sub.close()
        update(None)
        bar.close()
        text = _log_summary(job)
        if ok and text:
            print(text, file=sys.stderr, flush=True)


def _interval() -> float:
    from .. import _config
    return _config.seconds("progress-interval")


def _log_summary(job) -> str:
    try:
        text = summary(job)
    except Exception as exc:  # the pool may be closed under us; the summary is a courtesy
        log.debug("job %s: no summary: %s", job.id, exc)
        return ""
    log.info("%s", text)
    return text
