"""Task handles inside a Python call's arguments.

``job.submit(fn, a, [b, c])`` where ``a``, ``b``, ``c`` are Task handles: the
handles become dependencies and, on the worker, each is replaced by that
task's result. Handles are swapped for :class:`TaskRef` markers before
pickling so a call pickles without the job attached to its handles.
"""

from __future__ import annotations

from typing import Any, Callable


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
