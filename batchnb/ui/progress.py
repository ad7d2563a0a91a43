"""Terminal progress for scripts: a tqdm bar fed by the job's events, then a summary.

In a Jupyter kernel the widget shows progress instead, so nothing is drawn
here; ``quiet=True`` turns drawing off anywhere. On a terminal the bar
redraws in place; when stderr is a file or a pipe (a scheduled script, a CI
log) a plain line is written every :data:`PLAIN_EVERY` seconds instead, so a
long job leaves a readable log, not one endless carriage-return line.
Whatever is drawn, the ``batchnb`` logger records the wait's start and its
summary (INFO), so a script that configures :mod:`logging` keeps a record
without a bar; the summary is printed only when no logging handler already
writes it to stderr, so it shows once.

>>> describe({"running": 2, "succeeded": 5, "failed": 0})
'running=2 succeeded=5'
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from ..states import TASK_STATE_ORDER, TERMINAL_TASK_STATES, TaskState

log = logging.getLogger("batchnb")

# What moves first, then what waits, then what ended: a one-line summary reads from the left.
ORDER = tuple(s.value for s in (TaskState.RUNNING, TaskState.ACTIVE, TaskState.PENDING, *TASK_STATE_ORDER[3:]))
ENDED = tuple(s.value for s in TASK_STATE_ORDER if s in TERMINAL_TASK_STATES)
#: Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_EVERY = 10.0


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
    # Counted and summed up only for a log that keeps it: each is a few reads of the ledger (of
    # calls to the agent, for a detached pool), as long as the wait itself for a one-task job.
    logged = log.isEnabledFor(logging.INFO)
    if logged:
        log.info("job %s: waiting (%s)", job.id, describe(job.counts()) or "no tasks")
    if not draw:
        try:
            yield
        finally:
            if logged:
                _log_summary(job)
        return
    bar = _Bar(job) if _is_terminal(sys.stderr) else _PlainLines(job)
    sub = job.pool.bus.subscribe(bar.update, interval=_interval(), job_id=job.id)
    ok = False
    try:
        bar.update(None)
        yield
        ok = True
    finally:
        sub.close()
        bar.close()
        text = _log_summary(job)
        if ok and text and not _logs_to_stderr():
            print(text, file=sys.stderr, flush=True)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):       # no isatty, or a closed stream
        return False


class _Bar:
    """A tqdm bar redrawn in place: for a terminal."""

    def __init__(self, job):
        # tqdm.std, not tqdm.auto: auto would pick the ipywidgets bar in an IPython shell.
        from tqdm.std import tqdm
        self.job = job
        self.bar = tqdm(total=sum(job.counts().values()), desc=job.id, unit="task", file=sys.stderr,
                        dynamic_ncols=True, leave=True)

    def update(self, _events) -> None:
        c = self.job.counts()
        self.bar.total = sum(c.values())
        self.bar.n = sum(c.get(s, 0) for s in ENDED)
        self.bar.set_postfix_str(describe(c), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.update(None)
        self.bar.close()


class _PlainLines:
    """One plain line every PLAIN_EVERY seconds (and at the end) when stderr is a file or a pipe.

    The clock is the events' (updates come at most every progress-interval): a
    quiet job writes nothing, and the line is written only when the counts moved.
    """

    def __init__(self, job):
        self.job = job
        self.started = time.monotonic()
        self.last_time = -float("inf")
        self.last_line = None

    def update(self, _events, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_time < PLAIN_EVERY:
            return
        c = self.job.counts()
        line = f"{sum(c.get(s, 0) for s in ENDED)}/{sum(c.values())} tasks ended ({describe(c) or 'no tasks'})"
        if line == self.last_line:
            return
        self.last_time, self.last_line = now, line
        print(f"{self.job.id}: {line} [{now - self.started:.0f}s]", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.update(None, force=True)


def _logs_to_stderr() -> bool:
    """True when a handler of the ``batchnb`` logger's chain writes its INFO records to stderr."""
    if not log.isEnabledFor(logging.INFO):
        return False
    logger = log
    while logger is not None:
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and h.level <= logging.INFO \
                    and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__):
                return True
        logger = logger.parent if logger.propagate else None
    return False


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
