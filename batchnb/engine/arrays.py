"""Array tasks: a ``job.map`` stored as one array spec plus an index per task.

``job.map(fn, range(1_000_000))`` writes one row to the ledger's ``task_arrays``
table (the function and keyword arguments pickled once, the task options
once, and how to find each task's arguments) and, per task, a tasks row whose
``spec`` is a reference ``{"array": id, "index": i, "name": fn name}``. A
``range`` stays a range; any other iterable is read in chunks of
:data:`CHUNK` items, each chunk pickled and stored once by content under the
pool's results URL (:mod:`batchnb.staging.argstore`), never inline in the
ledger. A task's own :class:`~batchnb.spec.TaskSpec` is made on demand (when
it is dispatched, or asked for with ``t.spec``) by :meth:`Arrays.spec`, never
for all the tasks at once.

>>> import tempfile, os
>>> from pathlib import Path
>>> from batchnb.engine.ledger import Ledger
>>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
>>> b = ArrayBuilder(pow, "pow", (range(5), [10, 20, 30]), {}, {}, ("pow-", 0),
...                  Path(tempfile.mkdtemp()).as_uri(), {})
>>> for first, rows in b.chunks():       # zip's length: three tasks, the range stays a range
...     b.store_chunk(first, rows)
>>> b.n, b.args
(3, [{'range': [0, 5, 1]}, {'col': 0}])
>>> led.put_array("j", b.id, b.record())
>>> arrays = Arrays(led, {})
>>> s = arrays.spec("j", b.id, 2)
>>> s.id, s.python.name, arrays.args("j", b.id, 2)
('pow-2', 'pow', (2, 30))
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import pickle
import threading
import uuid
from collections import OrderedDict
from typing import Callable, Iterable

from .. import _config
from .. import spec as specs
from ..errors import SpecError
from ..node.pycall import loads_function
from ..spec.validate import task_id

#: Items per chunk of a map's arguments, and tasks per transaction when adding.
CHUNK = 10_000


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArrayBuilder:
    """Made in the caller's thread by ``job.map``: validates the options once, stores the
    call and each chunk of arguments, and gives the record the ledger keeps."""

    def __init__(self, fn: Callable, name: str, iterables: tuple, kwargs: dict, opts: dict,
                 ids: tuple[str, int], results_url: str, storage_options: dict, chunk: int | None = None):
        import cloudpickle
        from ..staging.argstore import by_reference
        self.id = "a" + uuid.uuid4().hex[:15]
        self.name = name
        # Validated once, as one task's options would be: a bad option is refused before any task is added.
        template = specs.TaskSpec(f"{ids[0]}{ids[1]}", python=specs.PythonCall(name, b"", "-"), **opts)
        self.template = {k: v for k, v in specs.to_dict(template).items() if k not in ("id", "python")}
        call = cloudpickle.dumps((fn, (), kwargs))
        self.kw_digest = _digest(cloudpickle.dumps(kwargs))
        # A function or a keyword argument too large to send inline is stored once for every task.
        self.call = by_reference(call, int(_config.get("inline-arg-limit")), results_url, storage_options)
        self.ids = ids
        self.chunk = chunk or CHUNK
        self._results_url, self._storage = results_url, storage_options
        self.ranges = {k: it for k, it in enumerate(iterables) if isinstance(it, range)}
        self.others = [iter(it) for k, it in enumerate(iterables) if k not in self.ranges]
        self.args: list[dict] = []
        col = 0
        for k in range(len(iterables)):
            if k in self.ranges:
                r = self.ranges[k]
                self.args.append({"range": [r.start, r.stop, r.step]})
            else:
                self.args.append({"col": col})
                col += 1
        self.chunk_refs: dict[str, dict] = {}
        self.n = 0

    def task_id(self, index: int) -> str:
        return f"{self.ids[0]}{self.ids[1] + index}"

    def chunks(self) -> Iterable[tuple[int, list]]:
        """``(first index, rows)`` per chunk; rows are the non-range arguments of each task
        (empty tuples when every iterable is a range). Each chunk is stored before it is given."""
        if not self.ranges and not self.others:
            return
        limit = min((len(r) for r in self.ranges.values()), default=None)
        first = 0
        while True:
            want = self.chunk if limit is None else min(self.chunk, limit - first)
            if want <= 0:
                return
            rows = list(itertools.islice(zip(*self.others), want)) if self.others else [()] * want
            if not rows:
                return
            yield first, rows
            first += len(rows)
            if len(rows) < want:
                return

    def store_chunk(self, first: int, rows: list) -> None:
        """Store one chunk's rows by content (nothing to store when every iterable is a range)."""
        if not self.others:
            self.n = max(self.n, first + len(rows))
            return
        import cloudpickle
        from ..staging.argstore import store
        ref = store(cloudpickle.dumps(rows), self._results_url, self._storage)
        self.chunk_refs[str(first // self.chunk)] = {"url": ref.url, "digest": ref.digest, "size": ref.size}
        self.n = max(self.n, first + len(rows))

    def args_of(self, index: int, row: tuple) -> tuple:
        return tuple(self.ranges[k][index] if "range" in a else row[a["col"]] for k, a in enumerate(self.args))

    def record(self) -> str:
        """The array's JSON for the ledger (rewritten as chunks are added)."""
        return json.dumps({"v": 1, "name": self.name, "call": base64.b64encode(self.call).decode("ascii"),
                           "kw": self.kw_digest, "template": self.template, "ids": list(self.ids),
                           "args": self.args, "chunk": self.chunk, "chunks": self.chunk_refs, "n": self.n})


def task_refs(array_id: str, name: str, kind: str | None = None) -> Callable[[int], str]:
    """A task row's spec text: a reference into its array (made by the million: formatted once);
    a sweep's says so (``"kind": "command"``, its name the command line template)."""
    more = f', "kind": {json.dumps(kind)}' if kind else ""
    head, tail = f'{{"array": "{array_id}", "index": ', f', "name": {json.dumps(name)}{more}}}'
    return lambda index: f"{head}{index:d}{tail}"


_REF_HEAD, _REF_INDEX = '{"array": "', '", "index": '


def array_ref(spec_text: str) -> tuple[str, int] | None:
    """``(array id, index)`` when a task row's spec is an array reference, else None.

    >>> array_ref(task_refs("a1", "f")(7))
    ('a1', 7)
    """
    if not spec_text.startswith(_REF_HEAD):
        return None
    # Read as task_refs wrote it (paging in a million tasks parsed each whole as JSON);
    # anything else is read as JSON.
    array_id, sep, rest = spec_text[len(_REF_HEAD):].partition(_REF_INDEX)
    digits = rest[:rest.find(",")]
    if sep and digits.isdigit() and "\\" not in array_id and '"' not in array_id:
        return array_id, int(digits)
    d = json.loads(spec_text)
    return d["array"], d["index"]


#: cloudpickle's own protocol (``cloudpickle.DEFAULT_PROTOCOL``), without importing it at module load
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _plain(value, depth: int = 0) -> bool:
    """Whether ``value`` is builtin data only (a few levels of small tuples, lists and dicts of
    scalars): plain pickle writes it byte for byte as cloudpickle does, in a tenth of the time.
    Anything else (a function or class, which cloudpickle may pickle by value) is not."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 3 or kind not in (tuple, list, dict) or len(value) > 32:
        return False
    if kind is dict:
        return all(type(k) in _SCALARS and _plain(v, depth + 1) for k, v in value.items())
    return all(_plain(x, depth + 1) for x in value)


def _plain_dumps(value) -> bytes:
    return pickle.dumps(value, protocol=_PROTOCOL)


class _Pickled:
    """Bytes pickled once that unpickle as their object where they sit inside another pickle: a
    map's function goes in every task's payload, and pickling a notebook's function by value for
    each task was most of what making a task's spec cost (on the node, it is unpickled once)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return loads_function, (self.data,)


class _Array:
    def __init__(self, record: dict, storage_options: dict):
        import cloudpickle
        self.record = record
        if record.get("kind") == "command":     # a sweep (engine/sweep.py): a command line template
            self.fn = self.kwargs = None
            self.template = specs.from_dict(specs.TaskSpec, {**record["template"], "id": "array-template",
                                                             "command": record["name"]})
        else:
            self.fn, _, self.kwargs = cloudpickle.loads(base64.b64decode(record["call"]))
            self.plain_kwargs = _plain(self.kwargs)
            self.fn_pickled = _Pickled(cloudpickle.dumps(self.fn))
            self.template = specs.from_dict(specs.TaskSpec, {
                **record["template"], "id": "array-template",
                "python": {"name": record["name"], "payload": "", "args_digest": "-"}})
        self.storage = storage_options
        self.chunks: OrderedDict[int, list] = OrderedDict()

    def rows(self, c: int) -> list:
        got = self.chunks.get(c)
        if got is None:
            from ..staging.argstore import ArgRef, fetch
            ref = self.record["chunks"][str(c)]
            got = fetch(ArgRef(ref["url"], ref["digest"], ref["size"]), self.storage)
            self.chunks[c] = got
            while len(self.chunks) > 2:      # tasks are dispatched in order: the next chunk, not all
                self.chunks.popitem(last=False)
        else:
            self.chunks.move_to_end(c)
        return got

    def args(self, index: int) -> tuple:
        size = self.record["chunk"]
        row = self.rows(index // size)[index % size] if any("col" in a for a in self.record["args"]) else ()
        return tuple(range(*a["range"])[index] if "range" in a else row[a["col"]] for a in self.record["args"])

    def task_id(self, index: int) -> str:
        prefix, start = self.record["ids"]
        return f"{prefix}{start + index}"


class Arrays:
    """The arrays of a ledger's jobs, read once each; makes a task's TaskSpec from its index."""

    def __init__(self, ledger, storage_options: dict, results_url: str | None = None):
        self.ledger = ledger
        self.storage = storage_options
        self.results_url = results_url
        self._limit: int | None = None
        self._open: OrderedDict[tuple[str, str], _Array] = OrderedDict()
        self._lock = threading.Lock()

    def _array(self, job_id: str, array_id: str) -> _Array:
        key = (job_id.lower(), array_id)
        with self._lock:
            arr = self._open.get(key)
            if arr is not None:
                self._open.move_to_end(key)
                return arr
        text = self.ledger.array(job_id, array_id)
        if text is None:
            raise SpecError("task", array_id, f"refers to an array job {job_id!r} does not have in the ledger")
        arr = _Array(json.loads(text), self.storage)
        with self._lock:
            self._open[key] = arr
            while len(self._open) > 16:
                self._open.popitem(last=False)
        return arr

    def forget(self, job_id: str, array_id: str) -> None:
        """An array's record changed (more chunks were added): read it again when next needed."""
        with self._lock:
            self._open.pop((job_id.lower(), array_id), None)

    def spec(self, job_id: str, array_id: str, index: int) -> specs.TaskSpec:
        """Task ``index`` of the array as a TaskSpec, its call pickled now."""
        import cloudpickle
        arr = self._array(job_id, array_id)
        if index >= arr.record["n"] and str(index // arr.record["chunk"]) not in arr.record["chunks"] \
                and any("col" in a for a in arr.record["args"]):
            self.forget(job_id, array_id)        # added after it was read
            arr = self._array(job_id, array_id)
        if arr.fn is None:
            return sweep_spec(arr.record, arr.template, index)
        args = arr.args(index)
        dumps = _plain_dumps if _plain(args) and arr.plain_kwargs else cloudpickle.dumps
        payload = dumps((arr.fn_pickled, args, arr.kwargs))
        call = specs.PythonCall(arr.record["name"], payload, dumps((args, arr.kwargs)))
        # The template was checked once, as the map's options; of a task's own fields only its id
        # can be wrong (too long), and a whole TaskSpec check per task was half of what this cost.
        out = _with(arr.template, id=task_id(arr.task_id(index)), python=call)
        if self.results_url is not None and len(payload) > self._inline_limit():
            from ..staging.argstore import spec_by_reference
            out = spec_by_reference(out, self.results_url, self.storage)
        return out

    def _inline_limit(self) -> int:
        if self._limit is None:         # read once: dask.config.get costs about 10 µs a task
            self._limit = int(_config.get("inline-arg-limit"))
        return self._limit

    def args(self, job_id: str, array_id: str, index: int) -> tuple:
        """Task ``index``'s positional arguments."""
        return self._array(job_id, array_id).args(index)

    def same(self, job_id: str, old: tuple[str, int], new: tuple[str, int]) -> bool:
        """Whether two array tasks are the same task without making either spec, when their arrays
        say so (same function name, options, keyword arguments and arguments at these indexes)."""
        a, b = self._array(job_id, old[0]), self._array(job_id, new[0])
        ra, rb = a.record, b.record
        if (ra["name"], ra.get("id"), ra["template"], ra["kw"], len(ra["args"])) != (
                rb["name"], rb.get("id"), rb["template"], rb["kw"], len(rb["args"])):
            return False
        if ra.get("kind") == "command":
            return params_of(ra, old[1]) == params_of(rb, new[1])
        for x, y in zip(ra["args"], rb["args"]):
            if ("range" in x) != ("range" in y):
                return False
            if "range" in x and range(*x["range"])[old[1]] != range(*y["range"])[new[1]]:
                return False
        if any("col" in x for x in ra["args"]):
            if ra["chunk"] != rb["chunk"] or old[1] != new[1]:
                return a.args(old[1]) == b.args(new[1])
            c = str(old[1] // ra["chunk"])
            ca, cb = ra["chunks"].get(c), rb["chunks"].get(c)
            if ca is None or cb is None or ca["digest"] != cb["digest"]:
                return a.args(old[1]) == b.args(new[1])
        return True


def _with(template: specs.TaskSpec, **fields) -> specs.TaskSpec:
    """``template`` with ``fields`` changed, none checked again (copy.copy took twice as long)."""
    out = object.__new__(specs.TaskSpec)
    out.__dict__.update(template.__dict__, **fields)
    return out


def params_of(record: dict, index: int) -> tuple:
    """The values task ``index`` of a sweep's array (engine/sweep.py: its record as stored) formats in."""
    params, left = [], index
    for a in reversed(record["args"]):
        r = range(*a["range"])
        left, k = divmod(left, len(r))
        params.append(r[k])
    return tuple(reversed(params))


def sweep_spec(record: dict, template: specs.TaskSpec, index: int) -> specs.TaskSpec:
    """Task ``index`` of a sweep's array as a TaskSpec."""
    params = params_of(record, index)
    return dataclasses.replace(template, id=record["id"].format(*params), command=record["name"].format(*params))


def spec_of_row(arrays: Arrays, job_id: str, spec_text: str) -> specs.TaskSpec:
    """The TaskSpec of a task row: its stored spec, or made from its array."""
    ref = array_ref(spec_text)
    if ref is not None:
        return arrays.spec(job_id, *ref)
    return specs.from_dict(specs.TaskSpec, json.loads(spec_text))


def cold_able(spec_text: str) -> bool:
    """Whether a task row may wait in the ledger alone, paged in when slots free up: no
    dependencies, default priority, one node (what the ready queue's order needs nothing else for)."""
    if spec_text.startswith('{"array": '):
        return True
    return '"depends_on"' not in spec_text and '"priority"' not in spec_text and '"multi_instance"' not in spec_text


def spec_cold_able(spec: specs.TaskSpec) -> bool:
    return not spec.depends_on and not spec.priority and spec.multi_instance is None

