"""Where the audit log is written: decorators on the few methods every mutating action lands in.

A detached pool's agent drives the same Pool, dispatcher and extension
methods as a kernel does (its RPC handlers set the caller's identity with
:func:`~batchnb.engine.audit.acting_as`, and :meth:`Dispatcher.call` carries
it to the dispatcher's thread), so one decorator per method records both, once:

- the dispatcher's ``create_job``, ``add_tasks`` (one record per call, with the
  count: a million tasks make a handful of records, not a million), ``add_array_chunk``
  (one per chunk of a ``job.map``) and
  ``terminate`` (a job's wall clock, budget or failed task end it through
  there too: recorded with the reason); :func:`~batchnb.engine.reactivate.reactivate`;
- the Pool's ``__init__``, ``resize`` and ``close``;
- the schedules extension's ``add``, ``enable``, ``disable`` and ``delete``.

A record made on the dispatcher's thread joins the turn's batch, so it is
written in the same transaction as the action's own changes. An action that
raises is recorded ``failed: <error>`` and the error goes on to the caller.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from ..errors import SpecError
from . import audit
from .audit import AuditRecord


def _on_dispatcher(disp) -> tuple:
    return disp.ledger, disp.engine.name, disp.batch


def _on_extension(ext) -> tuple:
    return ext.engine.ledger, ext.engine.name, None


def _on_pool(pool) -> tuple:
    return pool.ledger, pool.name, None


def _audits(where: Callable, action: str, target: Callable, detail: Callable | None = None,
            after: Callable | None = None, skip: Callable | None = None):
    """Record ``action`` around the decorated method. ``target``/``detail``/``skip`` get the
    method's arguments (self first); ``after`` gets its result and says the detail instead."""
    def decorate(fn):
        @functools.wraps(fn)
        def method(self, *args, **kwargs):
            if skip is not None and skip(self, *args, **kwargs):
                return fn(self, *args, **kwargs)
            ledger, pool, batch = where(self)
            with audit.audited(ledger, action, _safe(target, self, args, kwargs),
                               detail=_safe(detail, self, args, kwargs) if detail else None,
                               pool=pool, batch=batch) as note:
                result = fn(self, *args, **kwargs)
                if after is not None:
                    note.detail = after(result)
                return result
        return method
    return decorate


def _safe(fn: Callable, self, args: tuple, kwargs: dict) -> Any:
    # What the record names comes from the caller's arguments, which may be the very thing the
    # action refuses: a record with less in it, never an error of the audit's own instead.
    try:
        return fn(self, *args, **kwargs)
    except Exception:  # noqa: BLE001
        return "?"


def _job_target(disp, job_key, *_, **__) -> str:
    run = disp.jobs.get(job_key) if isinstance(job_key, str) else job_key
    return f"job:{run.spec.id if run is not None else job_key}"


def _count(n: int, what: str = "task") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# -- the dispatcher (engine/jobops.py) and reactivate (engine/reactivate.py) --------------------------------------
create_job = _audits(_on_dispatcher, "job-create", lambda d, spec, *a, **k: f"job:{spec.id}")
add_tasks = _audits(_on_dispatcher, "task-add", _job_target,
                    detail=lambda d, key, new, replace=False: _count(len(new)) + (" (replace)" if replace else ""))
add_array_chunk = _audits(_on_dispatcher, "task-add", _job_target,
                          detail=lambda d, key, array, record, ids, first, replace=False:
                          _count(len(ids)) + f" of map {array}" + (" (replace)" if replace else ""))
terminate = _audits(_on_dispatcher, "job-terminate", _job_target,
                    detail=lambda d, run, reason, *a, **k: f"reason: {reason}")
reactivate = _audits(_on_dispatcher, "task-reactivate", _job_target,
                     after=lambda ids: _count(len(ids)) + (f": {', '.join(ids)}" if ids else ""))


# -- the Pool (pool.py) --------------------------------------------------------------------------------------------
def _pool_shape(pool) -> str:
    spec = pool.spec
    size = "autoscale" if spec.autoscale is not None else f"dedicated {spec.dedicated}, spot {spec.spot}"
    return f"backend {spec.backend}, {size}" + (f", vm_size {spec.vm_size}" if spec.vm_size else "")


def pool_create(init):
    """``Pool.__init__``: recorded once the pool runs, or with the error that refused it."""
    @functools.wraps(init)
    def wrapped(self, name: str = "local", *args, **kwargs):
        try:
            init(self, name, *args, **kwargs)
        except BaseException as exc:
            _refused_pool(name, kwargs.get("ledger"), exc)
            raise
        audit.record(self.ledger, "pool-create", f"pool:{self.name}", detail=_pool_shape(self), pool=self.name)
    return wrapped


def _refused_pool(name: Any, ledger: Any, exc: BaseException) -> None:
    from .ledger import Ledger, default_ledger
    try:
        led = ledger if isinstance(ledger, Ledger) else (Ledger(ledger) if ledger else default_ledger())
        audit.record(led, "pool-create", f"pool:{name}", audit.failed(exc), pool=str(name))
    except Exception:  # noqa: BLE001 - no ledger to write to (a bad ledger= was the refusal): nothing to add
        pass


def pool_job(method):
    """``Pool.job``: a job refused for its spec before it reached the engine (a misspelt option,
    a bad id, tags or budget) is recorded ``job-create`` ``failed``; what the engine does is recorded
    there. A detached pool's client leaves it to the agent: what the client refuses itself never reached the pool."""
    @functools.wraps(method)
    def wrapped(self, job_id, **options):
        try:
            return method(self, job_id, **options)
        except SpecError as exc:
            if getattr(self, "_agent", None) is None and not getattr(exc, "_bnb_audited", False):
                name = str(getattr(job_id, "id", job_id))
                audit.record(self.ledger, "job-create", f"job:{name}", audit.failed(exc), job=name, pool=self.name)
            raise
    return wrapped


def _resize_detail(pool, dedicated=None, spot=None) -> str:
    return ", ".join(f"{g} {n}" for g, n in (("dedicated", dedicated), ("spot", spot)) if n is not None) or "no change"


pool_resize = _audits(_on_pool, "pool-resize", lambda p, *a, **k: f"pool:{p.name}", detail=_resize_detail)
pool_close = _audits(_on_pool, "pool-close", lambda p, *a, **k: f"pool:{p.name}", skip=lambda p: p._closed)


def pool_audit(pool, since: Any = None, job: str | None = None, identity: str | None = None) -> list[AuditRecord]:
    """``pool.audit()``: read here, or by a detached pool's agent (whose ledger it may be alone in having)."""
    if getattr(pool, "_agent", None) is not None:
        return pool._pool_call("audit", since, job, identity)
    return audit.read(pool.ledger, since, job, identity, pool=pool.name)


# -- the schedules extension (extensions/schedules.py) --------------------------------------------------------------
def _schedule(ext, name, *a, **k) -> str:
    return f"schedule:{name.get('id') if isinstance(name, dict) else name}"


schedule_create = _audits(_on_extension, "schedule-create", _schedule)
schedule_enable = _audits(_on_extension, "schedule-enable", _schedule)
schedule_disable = _audits(_on_extension, "schedule-disable", _schedule)
schedule_delete = _audits(_on_extension, "schedule-delete", _schedule)
