"""The audit log: who did what to a pool, a job or a schedule, and how it ended.

Every mutating action (pool create/resize/close, job create/terminate/delete,
task add/reactivate, schedule changes, role grants) appends one row to the
ledger's ``audit`` table: time, identity, action, target, outcome, detail.
The table is append-only: triggers of the schema refuse any UPDATE or DELETE
of it, so a row once written stays as written.

The identity is the one set by :func:`acting_as` around the call (a detached
pool's agent sets the caller's), else the OS user. Targets name their kind:
``pool:NAME``, ``job:ID``, ``schedule:NAME``; a record about a job also
carries the job's id, which :func:`read` filters on. A detail never holds a
secret's value: specs keep secrets as references, and nothing here reads an
environment.

>>> import os, tempfile
>>> from batchnb.engine.ledger import Ledger
>>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
>>> with acting_as("alice"):
...     record(led, "job-create", "job:j1")
>>> [(r.identity, r.action, r.target, r.outcome, r.job) for r in read(led)]
[('alice', 'job-create', 'job:j1', 'ok', 'j1')]
"""

from __future__ import annotations

import contextvars
import dataclasses
import getpass
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from ..errors import SpecError
from . import ledger_audit

_identity: contextvars.ContextVar[str | None] = contextvars.ContextVar("batchnb_audit_identity", default=None)

_MAX_TEXT = 2000     # an outcome or detail longer than this is cut: the log is for reading, not a dump


@contextmanager
def acting_as(identity: str) -> Iterator[str]:
    """Record the actions of the block (and of what it calls, on any thread the engine hands
    them to) as done by ``identity``.

    >>> with acting_as("bob"):
    ...     current_identity()
    'bob'
    """
    if not isinstance(identity, str) or not identity.strip():
        raise SpecError("identity", identity, "must be a non-empty string (a user or certificate name)")
    token = _identity.set(identity)
    try:
        yield identity
    finally:
        _identity.reset(token)


def os_user() -> str:
    """This process's OS user name (``uid N`` where the system has no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):     # a container's uid with no passwd entry and no $USER
        return f"uid {os.getuid()}"


def current_identity() -> str:
    """The identity set by :func:`acting_as`, else the OS user."""
    return _identity.get() or os_user()


def _cut(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 1] + "…"


def _job_of(target: str, job: str | None) -> str | None:
    if job is not None:
        return job
    return target[4:] if isinstance(target, str) and target.startswith("job:") else None


def row(action: str, target: str, outcome: str = "ok", identity: str | None = None, detail: Any = None,
        job: str | None = None, pool: str | None = None, now: float | None = None) -> tuple:
    """The parameters of the audit INSERT for one record (for a caller inside its own transaction)."""
    return (time.time() if now is None else now, identity or current_identity(), action, _job_of(target, job),
            target, _cut(outcome), _cut(detail), pool)


def record(ledger, action: str, target: str, outcome: str = "ok", identity: str | None = None,
           detail: Any = None, *, job: str | None = None, pool: str | None = None, batch=None) -> None:
    """Append one record to the ledger's audit table.

    ``batch``, a dispatcher's :class:`~batchnb.engine.ledger.Batch`, puts the
    INSERT into the transaction that writes the action's own changes;
    without it the row is written at once in a transaction of its own.
    ``job`` is the job the action concerns (taken from a ``job:ID`` target
    when not given), ``pool`` the pool whose log shows it (a record without
    one shows in the log of the pool its target or job belongs to).
    """
    params = row(action, target, outcome, identity, detail, job, pool)
    if batch is not None:
        batch.statements.append((ledger_audit.INSERT, params))
    else:
        ledger_audit.insert(ledger, params)


def failed(exc: BaseException) -> str:
    """The outcome of an action that raised ``exc``."""
    text = str(exc).strip().splitlines()
    return f"failed: {type(exc).__name__}" + (f": {text[0]}" if text else "")


class _Note:
    """What :func:`audited` yields: set ``detail`` (or ``job``) once the block knows it."""

    def __init__(self, detail: Any, job: str | None):
        self.detail = detail
        self.job = job


@contextmanager
def audited(ledger, action: str, target: str, *, detail: Any = None, job: str | None = None,
            pool: str | None = None, batch=None) -> Iterator[_Note]:
    """Record ``action``: ``ok`` when the block ends, ``failed: <error>`` when it raises (then re-raised).

    >>> import os, tempfile
    >>> from batchnb.engine.ledger import Ledger
    >>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
    >>> try:
    ...     with audited(led, "pool-resize", "pool:p"):
    ...         raise ValueError("dedicated: -1 is negative")
    ... except ValueError:
    ...     pass
    >>> read(led)[0].outcome
    'failed: ValueError: dedicated: -1 is negative'
    """
    note = _Note(detail, job)
    try:
        yield note
    except BaseException as exc:
        # The action's own error is what the caller must see; a ledger that cannot take the
        # record as well must not replace it.
        try:
            record(ledger, action, target, failed(exc), detail=note.detail, job=note.job, pool=pool, batch=batch)
            exc._bnb_audited = True        # an outer caller that records refusals knows this one is in
        except Exception:  # noqa: BLE001
            import logging
            logging.getLogger("batchnb.audit").exception("batchnb could not record the failed %s", action)
        raise
    record(ledger, action, target, detail=note.detail, job=note.job, pool=pool, batch=batch)


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """One entry of a pool's audit log (``pool.audit()``, ``batchnb audit``).

    ``time`` is seconds since the epoch; ``identity`` who acted (an OS user,
    or the name a detached pool's agent knows its caller by); ``action`` what
    was done (``job-create``, ``task-add``, ...); ``target`` what it was done
    to (``pool:NAME``, ``job:ID``, ``schedule:NAME``); ``outcome`` ``ok`` or
    ``failed: <error>``; ``detail`` more (how many tasks, which ones);
    ``job`` the job concerned, if any.

    >>> r = AuditRecord(0.0, "alice", "task-add", "job:j", "ok", "3 tasks", "j")
    >>> print(r)
    1970-01-01T00:00:00Z alice task-add job:j ok 3 tasks
    """

    time: float
    identity: str
    action: str
    target: str
    outcome: str
    detail: str | None = None
    job: str | None = None

    def __str__(self) -> str:
        stamp = datetime.fromtimestamp(self.time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return " ".join(x for x in (stamp, self.identity, self.action, self.target, self.outcome, self.detail) if x)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")


def since_time(value: Any, now: float | None = None) -> float | None:
    """``since=`` as seconds since the epoch: a number, a datetime, an ISO date/time
    (UTC unless it says otherwise), or a duration back from now (``"30m"``, ``"2h"``, ``"1d"``).

    >>> since_time("2h", now=10_000.0)
    2800.0
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise SpecError("since", value, "must be a time: seconds since the epoch, a datetime, "
                                        "an ISO date like '2026-12-01T10:00', or a duration like '2h'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
            return (time.time() if now is None else now) - seconds
        try:
            return since_time(datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise SpecError("since", value, "must be a time: seconds since the epoch, a datetime, "
                                    "an ISO date like '2026-12-01T10:00', or a duration like '2h'")


def read(ledger, since: Any = None, job: str | None = None, identity: str | None = None,
         action: str | None = None, pool: str | None = None) -> list[AuditRecord]:
    """The audit records of the ledger, oldest first; each filter narrows them (``pool``: the
    records of that pool, of its jobs and of its schedules)."""
    rows = ledger_audit.select(ledger, since_time(since), job, identity, action, pool)
    return [AuditRecord(r[0], r[1] or "", r[2], r[4] or (f"job:{r[3]}" if r[3] else ""), r[5] or "", r[6], r[3])
            for r in rows]
