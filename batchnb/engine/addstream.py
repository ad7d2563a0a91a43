"""``job.add_tasks`` of any iterable: read in chunks, never held whole, one chunk built while the
one before it is written.

The caller's thread makes and checks a chunk's specs (a generator of a million
TaskSpecs is mostly Python work there) while the dispatcher's thread adds the
chunk before it (mostly SQLite, which lets go of the GIL): the two overlap on
two cores. Chunks are added in order, so a dependency may name a task of an
earlier chunk; a bad task raises once every chunk before its own is added,
and those stay added.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from ..spec import TaskSpec
from . import arrays
from .taskids import TaskIds


def add_stream(disp, job_key: str, tasks: Iterable, replace: bool,
               spec_of: Callable[[object, int, int], TaskSpec]) -> TaskIds:
    """Add ``tasks`` (TaskSpecs, or items ``spec_of(item, number, added)`` makes one of); the ids added.

    ``disp`` is the dispatcher, or a detached pool's proxy of it (no ``call_soon``: each
    chunk is one call to the agent, waited for)."""
    out = TaskIds()
    soon = getattr(disp, "call_soon", None)
    pending, pending_n = None, 0            # the chunk being added, and its length

    def settle() -> None:
        nonlocal pending, pending_n
        if pending is not None:
            reply, pending = pending, None
            pending_n = 0
            out.extend(tr.spec.id for tr in disp.result_of(reply, None))

    it = iter(tasks)
    try:
        while True:
            given = len(out) + pending_n            # tasks given before this chunk
            chunk = [t if isinstance(t, TaskSpec) else spec_of(t, given + k, given)
                     for k, t in enumerate(itertools.islice(it, arrays.CHUNK))]
            settle()
            if not chunk:
                return out
            if soon is None:
                out.extend(tr.spec.id for tr in disp.call(disp.add_tasks, job_key, chunk, replace, timeout=None))
            else:
                pending, pending_n = soon(disp.add_tasks, job_key, chunk, replace), len(chunk)
            if len(chunk) < arrays.CHUNK:
                settle()
                return out
    except BaseException:
        try:
            settle()        # the chunk before a bad one is added first
        except BaseException as earlier:  # noqa: BLE001 - that chunk's own error came first
            raise earlier from None
        raise
