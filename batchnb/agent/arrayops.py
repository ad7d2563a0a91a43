"""A detached pool's ``job.map`` and ``job.sweep`` as task arrays, as in-kernel.

The client sends a map in pieces (the whole map at once when every iterable
is a range, else :data:`~batchnb.engine.arrays.CHUNK` rows at a time) and
the agent stores each piece as one array spec plus an index per task
(:mod:`batchnb.engine.jobmap`); a sweep goes whole, as its template and
ranges. Per task, nothing crosses the link but the rows of a map over
values that are not ranges. A piece whose rows hold task handles (a map over
other tasks' results) is added task by task by the client instead, since
each of those tasks has dependencies of its own.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from ..engine.arrays import CHUNK
from ..engine.jobmap import map_array
from ..engine.sweep import add_sweep
from ..engine.taskids import TaskIds
from ..node.pycall import extract


class ArrayOps:
    """The agent's side (mixed into :class:`~.rpc.AgentHandlers`)."""

    OPS = ("map_array", "add_sweep")

    async def map_array(self, client: str, job_id: str, call: bytes) -> int:
        import cloudpickle

        def mapping():
            fn, name, iterables, kwargs, opts, ids = cloudpickle.loads(call)
            job = self._job(job_id)
            return map_array(job._dispatcher(), job._run.key, fn, name, iterables, kwargs, opts, tuple(ids),
                             job._python_spec, lambda x: False)     # the client kept handles out
        return await self._run(mapping)

    async def add_sweep(self, client: str, job_id: str, sweep: bytes, replace: bool = False) -> bytes:
        import cloudpickle

        def sweeping():
            job, ids = self._job(job_id), TaskIds()
            add_sweep(job._dispatcher(), job._run.key, cloudpickle.loads(sweep), replace, ids)
            return cloudpickle.dumps(ids)
        return await self._run(sweeping)


def map_in_pieces(link, job_id: str, add_tasks: Callable[[list], Any], fn: Callable, name: str,
                  iterables: tuple, kwargs: dict, opts: dict, ids: tuple[str, int],
                  python_spec: Callable, is_handle: Callable[[Any], bool]) -> int:
    """The client's side of a map: how many tasks it added, named ``ids[0] + str(ids[1] + i)``."""
    import cloudpickle

    def send(first: int, pieces: tuple) -> None:
        link.call("map_array", job_id=job_id,
                  call=cloudpickle.dumps((fn, name, pieces, kwargs, opts, (ids[0], ids[1] + first))))

    ranges = {k: it for k, it in enumerate(iterables) if isinstance(it, range)}
    limit = min((len(r) for r in ranges.values()), default=None)
    if len(ranges) == len(iterables):
        if limit:
            send(0, tuple(iterables))
        return limit or 0
    others = zip(*(iter(it) for k, it in enumerate(iterables) if k not in ranges))
    first = 0
    while limit is None or first < limit:
        rows = list(itertools.islice(others, CHUNK if limit is None else min(CHUNK, limit - first)))
        if not rows:
            break
        columns = iter(zip(*rows))
        pieces = tuple(it[first:first + len(rows)] if k in ranges else list(next(columns))
                       for k, it in enumerate(iterables))
        found: dict = {}
        extract(rows, is_handle, found)
        if found:
            add_tasks([python_spec(fn, args, dict(kwargs), {**opts, "task_id": f"{ids[0]}{ids[1] + first + k}"})
                       for k, args in enumerate(zip(*pieces))])
        else:
            send(first, pieces)
        first += len(rows)
    return first
