"""``job.map`` as task arrays: one array spec, its arguments in chunks, one transaction per chunk.

Run in the caller's thread (the pickling and the storing of chunks happen
there); each chunk's tasks are recorded on the dispatcher's thread by
:meth:`~batchnb.engine.taskstore.TaskPaging.add_array_chunk`. A chunk whose
items hold task handles (a map over other tasks' results) is added task by
task instead, as ``job.submit`` would, since each of its tasks has
dependencies of its own.
"""

from __future__ import annotations

from typing import Any, Callable

from ..node.pycall import extract
from .arrays import ArrayBuilder


def map_array(disp, job_key: str, fn: Callable, name: str, iterables: tuple, kwargs: dict, opts: dict,
              ids: tuple[str, int], python_spec: Callable, is_handle: Callable[[Any], bool]) -> int:
    """Add ``fn`` over ``iterables`` as arrays of tasks named ``ids[0] + str(ids[1] + i)``; how many
    (their ids are not kept: a million of them would be most of a map's memory)."""
    replace = bool(opts.get("replace", False))
    template = {k: v for k, v in opts.items() if k != "replace"}
    builder = ArrayBuilder(fn, name, iterables, kwargs, template, ids, disp.engine.results_url,
                           disp.engine.storage_options)
    n = 0
    for first, rows in builder.chunks():
        found: dict = {}
        if builder.others:          # a range holds numbers, never a task
            extract(rows, is_handle, found)
        if found:
            made = [python_spec(fn, builder.args_of(first + k, row), dict(kwargs),
                                {**opts, "task_id": builder.task_id(first + k)}) for k, row in enumerate(rows)]
            disp.call(disp.add_tasks, job_key, made, replace, timeout=None)
            n += len(rows)
            continue
        builder.store_chunk(first, rows)
        chunk_ids = [builder.task_id(first + k) for k in range(len(rows))]
        disp.call(disp.add_array_chunk, job_key, builder.id, builder.record(), chunk_ids, first, replace,
                  timeout=None)
        n += len(rows)
    return n
