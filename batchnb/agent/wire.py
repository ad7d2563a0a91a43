"""What travels between an agent and its clients, both ways.

Specs travel as their codec dicts (the agent unpickles nothing a client
sends to make a task: a Python task's payload is unpickled on the node that
runs it, as in-kernel). Events travel as (class name, field values).
Errors travel whole, with their fields, so a client raises the same
:class:`~batchnb.SpecError` (field, value) that an in-kernel pool would.

>>> from batchnb.errors import SpecError
>>> err = unpack_error(pack_error(SpecError("dedicated", -1, "must be at least 0")))
>>> type(err).__name__, err.field, str(err)
('SpecError', 'dedicated', 'dedicated: -1 is invalid: must be at least 0')
>>> from batchnb.engine.events import JobStateChanged
>>> unpack_event(*pack_event(JobStateChanged("j", "completed", 1.0, "all_tasks_complete")))
JobStateChanged(job_id='j', state='completed', time=1.0, reason='all_tasks_complete')
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Callable

from ..engine import events as _events
from ..errors import BatchError

_EVENT_CLASSES = {cls.__name__: cls for cls in (
    _events.TaskStateChanged, _events.TasksAdded, _events.JobStateChanged, _events.NodeStateChanged,
    _events.BytesMoved, _events.CostSample, _events.PoolTargets, _events.PoolStalledChanged)}


_PACKERS: dict[type, Callable[[Any], list]] = {}


def pack_event(event) -> tuple[str, list]:
    # An agent packs a few events for every task it runs: the fields are looked up once per class.
    cls = type(event)
    pack = _PACKERS.get(cls)
    if pack is None:
        names = [f.name for f in dataclasses.fields(cls)]
        get = operator.attrgetter(*names)       # a tuple of values for two names or more
        pack = _PACKERS[cls] = (lambda e: list(get(e))) if len(names) > 1 else (lambda e: [get(e)])
    return cls.__name__, pack(event)


def unpack_event(kind: str, values: list):
    cls = _EVENT_CLASSES.get(kind)
    return cls(*values) if cls is not None else None


def pack_error(exc: BaseException) -> bytes:
    """The exception's class, arguments and fields (its __init__ is not run again on the way back:
    a SpecError's message is made from fields its constructor takes apart)."""
    import cloudpickle
    try:
        return cloudpickle.dumps((type(exc), exc.args, dict(vars(exc))))
    except Exception:  # noqa: BLE001 - a field that cannot travel: the message still does
        return cloudpickle.dumps((type(exc) if isinstance(exc, BatchError) else BatchError, (str(exc),), {}))


def unpack_error(data: bytes) -> BaseException:
    import cloudpickle
    try:
        cls, args, fields = cloudpickle.loads(data)
        exc = cls.__new__(cls)
        exc.args = tuple(args)
        vars(exc).update(fields)
        return exc
    except Exception as err:  # noqa: BLE001 - a class this process cannot load
        return BatchError(f"the agent raised an error this process cannot read ({err})")
