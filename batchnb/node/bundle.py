"""A bundle on a worker: several tiny attempts in one Dask task, and the chains they carry.

The dispatcher sends tiny tasks together (see :mod:`batchnb.engine.bundles` for
what is tiny) so that a task costs about its own work, not a Dask round trip.
Each attempt is still its own, with its own folder, tails, exit code and record:
a plain command (:func:`batchnb.node.cmdbatch.plain`) is started by the bundle's
:class:`~batchnb.node.cmdbatch.CommandBatch`, which sets up once what the bundle's
commands share, any other attempt by :func:`batchnb.node.runner.run_attempt`.
The bundle returns the records in the order it ran them.

``carried`` are successors sent along: ``(request, predecessor's task id)``.
One runs only after its predecessor ran in this bundle and succeeded, with
that predecessor's result in its ``dep_results``; otherwise it is left out
(the driver dispatches it, or blocks it, as the predecessor's outcome says).
"""

from __future__ import annotations

import pickle
from dataclasses import replace

from . import cmdbatch as _cmdbatch
from . import quickrun, runner
from .attempt import AttemptRecord, AttemptRequest


def run_packed(packed: bytes):
    """``fn(*args)`` of a call the driver pickled once (:func:`pack`): Dask's scheduler then
    holds bytes, not hundreds of requests it would unpickle and pickle again on their way here."""
    fn, args = pickle.loads(packed)
    return fn(*args)


def pack(fn, args: tuple) -> bytes:
    """``(fn, args)`` pickled for :func:`run_packed`: with plain pickle, as a runner's requests are
    builtin data and this package's classes (a task's own call is bytes in them already); with
    cloudpickle, as Dask would, when something in them is not (a storage option's callable)."""
    try:
        return pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - pickle's errors have no one type (PicklingError, TypeError, ...)
        import cloudpickle
        return cloudpickle.dumps((fn, args))


class BundleRecords(list):
    """The records of one bundle; those from ``carried_from`` on are of carried tasks."""

    carried_from: int = 0


def run_bundle(requests: list[AttemptRequest], carried: list = ()) -> BundleRecords:
    """Run ``requests`` one after another, then the ``carried`` whose predecessor succeeded here."""
    batch = _cmdbatch.CommandBatch()
    try:
        return _run(requests, carried, batch)
    finally:
        batch.close()


def _attempt(req: AttemptRequest, batch) -> AttemptRecord:
    if _cmdbatch.plain(req):
        return batch.run(req)
    return runner.run_attempt(req, drop=quickrun.drop_later)


def _run(requests, carried, batch) -> BundleRecords:
    out = BundleRecords(_attempt(req, batch) for req in requests)
    out.carried_from = len(out)
    done: dict[str, AttemptRecord] = {r.task_id.lower(): r for r in out}
    for req, pred in carried:
        prev = done.get(pred.lower())
        if prev is None or not prev.succeeded:
            continue
        value = prev.result_url or prev.result
        if req.python is not None and value is not None:
            req = replace(req, dep_results={**req.dep_results, pred: value})
        record = _attempt(req, batch)
        out.append(record)
        done[record.task_id.lower()] = record
    return out
