"""Task handles inside a Python call's arguments.

``job.submit(fn, a, [b, c])`` where ``a``, ``b``, ``c`` are Task handles: the
handles become dependencies and, on the worker, each is replaced by that
task's result. Handles are swapped for :class:`TaskRef` markers before
pickling so a call pickles without the job attached to its handles.
"""

from __future__ import annotations

import functools
import pickle
from typing import Any, Callable


@functools.lru_cache(maxsize=100)
def loads_function(data: bytes) -> Callable:
    """A map's function, unpickled once per worker process and kept for its next tasks, as
    Dask's workers keep the functions they are sent: unpickling a notebook's function for each
    task was a quarter of what a tiny task cost its node."""
    return pickle.loads(data)


class TaskRef:
    """Stands for a task's result inside pickled arguments."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: str):
        self.task_id = task_id

    def __reduce__(self):
        return (TaskRef, (self.task_id,))

    def __eq__(self, other):
        return isinstance(other, TaskRef) and other.task_id == self.task_id

    def __hash__(self):
        return hash(self.task_id)

    def __repr__(self):
        return f"TaskRef({self.task_id!r})"


def _walk(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(obj, list):
        return [_walk(x, leaf) for x in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_walk(x, leaf) for x in obj)
    if isinstance(obj, dict):
        return {k: _walk(x, leaf) for k, x in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return type(obj)(_walk(x, leaf) for x in obj)
    return leaf(obj)


def extract(obj: Any, is_handle: Callable[[Any], bool], found: dict) -> Any:
    """Replace handles by TaskRefs, collecting their ids into ``found`` (in order)."""
    def leaf(x):
        if is_handle(x):
            found[x.task_id] = None
            return TaskRef(x.task_id)
        return x
    return _walk(obj, leaf)


def substitute(obj: Any, results: dict) -> Any:
    """Replace TaskRefs by results (matched case-insensitively, as task ids are)."""
    lowered = {k.lower(): v for k, v in results.items()}
    return _walk(obj, lambda x: lowered[x.task_id.lower()] if isinstance(x, TaskRef) else x)


def python_task_spec(task_id: str, name: str, fn: Callable, args: tuple, kwargs: dict, opts: dict,
                     is_handle: Callable[[Any], bool]):
    """The TaskSpec of ``fn(*args, **kwargs)``, pickled by value: the tasks among the arguments
    (``is_handle``) become dependencies after ``opts["depends_on"]`` (ranges kept whole)."""
    import cloudpickle
    from .. import spec as specs
    from ..spec.options import unpicklable
    found: dict[str, None] = {}
    args = extract(args, is_handle, found)
    kwargs = extract(kwargs, is_handle, found)
    given = specs.dependency_ids(opts.pop("depends_on", None))
    deps = list(given.items()) + [d for d in found if d not in given]
    try:
        payload = cloudpickle.dumps((fn, args, kwargs))
        arg_bytes = cloudpickle.dumps((args, kwargs))
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises, name the culprit
        raise unpicklable(task_id, fn, args, kwargs, exc) from None
    call = specs.PythonCall(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', name)}",
                            payload, arg_bytes)
    return specs.TaskSpec(task_id, python=call, depends_on=tuple(deps), **opts)
