"""Large Python arguments by reference: stored once, by content, under the pool's results URL.

A Python task's call is pickled whole when it is submitted. When it is larger
than ``batchnb.inline-arg-limit`` (256 KiB), the engine moves its large parts
(an argument, a keyword argument's value, or the function itself when it
carries big data in a closure), largest first, into files named by the
SHA-256 of their pickle, ``<results URL>/.args/<sha256>.pkl``, and the call
that the ledger keeps holds an :class:`ArgRef` in their place: a job with a
50 MB argument adds a few hundred bytes to the ledger, and ``job.map(fn,
items, table=big)`` stores ``big`` once for all its tasks. The node reads
each reference back (checking its digest) when the attempt starts.

``.args`` cannot be a job id (ids have no dot), so removing a job's results
never meets it; ``bnb.prune()`` removes the files no task in the ledger
refers to any more.

>>> import cloudpickle, tempfile
>>> from pathlib import Path
>>> base = Path(tempfile.mkdtemp()).as_uri()
>>> payload = cloudpickle.dumps((len, (b"x" * 100_000,), {}))
>>> small = by_reference(payload, 1024, base, {})
>>> len(small) < 1024
True
>>> fn, args, kwargs = resolve(*cloudpickle.loads(small), storage_options={})
>>> fn(*args)
100000
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from typing import Any

from ..errors import StagingError

#: The folder under the results URL; a name no job id can take (ids have no dot).
ARGS_DIR = ".args"
#: Parts smaller than this stay inline whatever the call's size: moving them saves nothing.
_MIN_PART = 4096
_NAME = re.compile(rb"/\.args/([0-9a-f]{64})\.pkl")


class ArgRef:
    """Stands for a large argument stored at ``url`` (its pickle's SHA-256 is ``digest``)."""

    __slots__ = ("url", "digest", "size")

    def __init__(self, url: str, digest: str, size: int):
        self.url, self.digest, self.size = url, digest, size

    def __reduce__(self):
        return (ArgRef, (self.url, self.digest, self.size))

    def __eq__(self, other):
        return isinstance(other, ArgRef) and other.digest == self.digest

    def __hash__(self):
        return hash(self.digest)

    def __repr__(self):
        return f"ArgRef({self.url!r}, {self.size} bytes)"


def _fs(url: str, storage_options: dict):
    import fsspec
    protocol = url.split("://")[0] if "://" in url else "file"
    return fsspec.core.url_to_fs(url, **(storage_options.get(protocol) or {}))


def store(data: bytes, base_url: str, storage_options: dict) -> ArgRef:
    """Put ``data`` under ``base_url``/.args once (by its SHA-256); its reference."""
    digest = hashlib.sha256(data).hexdigest()
    url = f"{base_url.rstrip('/')}/{ARGS_DIR}/{digest}.pkl"
    try:
        fs, path = _fs(url, storage_options)
        if not (fs.exists(path) and fs.size(path) == len(data)):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            # Written aside, then moved: a reader never sees half a file under the final name.
            tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.part"
            with fs.open(tmp, "wb") as fh:
                fh.write(data)
            fs.mv(tmp, path)
    except Exception as exc:  # noqa: BLE001 - any store failure is the argument's, said with its place
        raise StagingError(f"a Python argument of {len(data)} bytes could not be stored at {url}: "
                           f"{type(exc).__name__}: {exc}", url) from None
    return ArgRef(url, digest, len(data))


#: Checked bytes of recent arguments, per worker process: the tasks of a map share one constant,
#: read and checked once per worker rather than once per task. Each task unpickles its own copy.
_CACHE_BYTES = 64 * 2**20
_cache: OrderedDict[str, bytes] = OrderedDict()
_cache_lock = threading.Lock()


def _read(ref: ArgRef, storage_options: dict) -> bytes:
    with _cache_lock:
        data = _cache.get(ref.digest)
        if data is not None:
            _cache.move_to_end(ref.digest)
            return data
    try:
        fs, path = _fs(ref.url, storage_options)
        with fs.open(path, "rb") as fh:
            data = fh.read()
    except Exception as exc:  # noqa: BLE001 - the attempt fails with the place it could not read
        raise StagingError(f"the Python argument stored at {ref.url} cannot be read: "
                           f"{type(exc).__name__}: {exc}", ref.url) from None
    if hashlib.sha256(data).hexdigest() != ref.digest:
        raise StagingError(f"the Python argument stored at {ref.url} was changed since it was stored "
                           f"({len(data)} bytes, {ref.size} expected)", ref.url)
    if len(data) <= _CACHE_BYTES // 4:
        with _cache_lock:
            _cache[ref.digest] = data
            while sum(map(len, _cache.values())) > _CACHE_BYTES:
                _cache.popitem(last=False)
    return data


def fetch(ref: ArgRef, storage_options: dict) -> Any:
    """The value behind ``ref``, its bytes checked against the digest."""
    import cloudpickle
    return cloudpickle.loads(_read(ref, storage_options))


def by_reference(payload: bytes, limit: int, base_url: str, storage_options: dict) -> bytes:
    """``payload`` (a pickled ``(fn, args, kwargs)``) with its large parts stored by reference.

    Parts go largest first until what stays inline is within ``limit``.
    Returns ``payload`` itself when it is within the limit or cannot be split.
    """
    if len(payload) <= limit:
        return payload
    import cloudpickle
    try:
        fn, args, kwargs = cloudpickle.loads(payload)
        args, kwargs = list(args), dict(kwargs)
        parts = [(("fn", None), cloudpickle.dumps(fn))]
        parts += [(("arg", i), cloudpickle.dumps(a)) for i, a in enumerate(args)]
        parts += [(("kw", k), cloudpickle.dumps(a)) for k, a in kwargs.items()]
    except Exception:  # noqa: BLE001 - a call that does not round-trip here stays as it was
        return payload
    inline = len(payload)
    for (kind, key), data in sorted(parts, key=lambda p: -len(p[1])):
        if inline <= limit or len(data) < _MIN_PART:
            break
        ref = store(data, base_url, storage_options)
        if kind == "fn":
            fn = ref
        elif kind == "arg":
            args[key] = ref
        else:
            kwargs[key] = ref
        inline -= len(data)
    return cloudpickle.dumps((fn, tuple(args), kwargs))


def resolve(fn, args, kwargs, storage_options: dict):
    """``(fn, args, kwargs)`` with every :class:`ArgRef` among them read back."""
    def get(x):
        return fetch(x, storage_options) if isinstance(x, ArgRef) else x
    return get(fn), tuple(get(a) for a in args), {k: get(a) for k, a in kwargs.items()}


def referenced(payload: bytes) -> set[str]:
    """The digests a pickled call refers to (its ArgRefs' file names)."""
    return {m.decode("ascii") for m in _NAME.findall(payload)}


def spec_by_reference(spec, base_url: str, storage_options: dict):
    """``spec`` (a TaskSpec) with its Python call's large parts stored by reference.

    Its ``args_digest`` is kept: the task equals the one submitted, so a re-run
    notebook that submits it again still adds nothing.
    """
    from dataclasses import replace
    from .. import _config
    call = spec.python
    if call is None:
        return spec
    payload = by_reference(call.payload, int(_config.get("inline-arg-limit")), base_url, storage_options)
    if payload is call.payload:
        return spec
    return replace(spec, python=type(call)(call.name, payload, call.args_digest))
