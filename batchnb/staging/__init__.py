"""Stage a task's inputs in and its outputs out, through fsspec URLs.

What Azure Batch does with a task's ``resourceFiles`` and ``outputFiles``:

* **Inputs** (:class:`~batchnb.spec.ResourceFile`): a URL is fetched to its
  path in the working dir; a URL ending in ``/`` is a prefix whose objects
  land under the folder ``path`` with their relative paths (Azure's
  ``storageContainerUrl`` + ``blobPrefix``). ``file_mode`` is applied.
  With a node cache, each version of an object (etag, checksum or mtime) is
  downloaded once per node and hard-linked into every task that asks for it;
  such inputs are read-only, and one with a ``file_mode`` gets its own copy,
  as does every input when the worker runs as root (root ignores read-only
  modes). An entry a task changed anyway is noticed and fetched again.
* **Outputs** (:class:`~batchnb.spec.OutputFile`): files matching a glob in
  the working dir go to a destination templated with ``{job_id}``,
  ``{task_id}`` and ``{attempt}``; one ending in ``/`` is a folder that keeps
  each file's path below the glob's base. ``stdout.txt`` and ``stderr.txt``,
  which the runner keeps one level up in the task dir, are matched by
  top-level patterns that start with a literal character (``stdout.txt``,
  ``std*.txt``), where Azure needs ``../std*.txt``. A pattern that matches
  nothing is no error, as in Azure. A destination's container (an Azure
  Blob container; an S3 or GCS bucket) must exist: as in Azure, an upload
  to a missing one fails (the attempt's category ``upload``, Azure's
  ``file_upload_error``) instead of creating it. Local (``file://``) and
  ``memory://`` destinations get their folders made.

Transient storage errors (refused or reset connections, timeouts, 408, 429,
5xx) are retried with capped exponential backoff for ``batchnb.staging-retry-for``
(a minute by default; :class:`~batchnb.staging.retry.RetryPolicy`), then
raised as :class:`~batchnb.errors.StagingError` with ``transient=True``.
``storage_options`` (one dict per protocol; ``az``, ``abfs`` and ``abfss`` serve
each other) never appear in a message: URL queries (SAS tokens) and every
string of the options are replaced by ``***``.

>>> import fsspec, tempfile
>>> from pathlib import Path
>>> from batchnb.spec import ResourceFile, OutputFile
>>> fsspec.filesystem("memory").pipe("/doc/in.txt", b"hello")
>>> wd = Path(tempfile.mkdtemp())
>>> stage_in((ResourceFile("data/in.txt", "memory://doc/in.txt"),), wd, storage_options={}, cache_dir=None).files
1
>>> (wd / "data/in.txt").read_text()
'hello'
>>> stats = stage_out((OutputFile("data/*.txt", "memory://doc/{task_id}/"),), wd, job_id="j", task_id="t1",
...                   attempt=1, outcome="success", storage_options={}, task_dir=wd.parent)
>>> fsspec.filesystem("memory").cat("/doc/t1/in.txt")
b'hello'
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fsspec.core import split_protocol

from . import patterns as globs
from .cache import NodeCache, place
from .storage import CONTAINER_STORES, RetryPolicy, Transfers, version_key
from ..errors import SpecError, StagingError
from ..spec.model import OutputFile, ResourceFile

__all__ = ["StageStats", "stage_in", "stage_out"]

CONCURRENCY = 16        # transfers at once per stage_in/stage_out call
STD_FILES = ("stdout.txt", "stderr.txt")


@dataclass(frozen=True)
class StageStats:
    """What a stage-in or stage-out moved.

    ``nbytes`` counts the bytes of every file placed or uploaded, including
    inputs served from the node cache (``cache_hits`` of the ``files``).

    >>> StageStats(nbytes=2048, seconds=0.5, files=2).files
    2
    """

    nbytes: int = 0
    seconds: float = 0.0
    files: int = 0
    cache_hits: int = 0


def _transfers(storage_options: Mapping[str, Any] | None) -> Transfers:
    # Read per call, where the transfer runs: a node sees the settings it was started with.
    return Transfers(storage_options or {}, RetryPolicy.from_config(), CONCURRENCY)


# -- stage-in ----------------------------------------------------------------

@dataclass
class _Fetch:
    what: str                   # "input data/x.bin", for messages
    url: str                    # the object's own URL (a prefix's URL + relative path)
    fs: Any
    rpath: str
    target: Path
    mode: int | None
    missing: str                # the message when the object is not there
    info: Mapping | None = None  # from a prefix listing, which saves one request per file


def stage_in(inputs: tuple[ResourceFile, ...], workdir: Path, *, storage_options: Mapping[str, Any],
             cache_dir: Path | None = None) -> StageStats:
    """Fetch ``inputs`` into ``workdir``.

    Parameters
    ----------
    inputs : tuple of ResourceFile
        What to fetch and where it goes inside ``workdir``.
    workdir : Path
        The task's working directory.
    storage_options : dict
        Per protocol, e.g. ``{"abfs": {"connection_string": ...}}``.
    cache_dir : Path, optional
        The node-local cache; None fetches every input afresh.

    Returns
    -------
    StageStats

    Raises
    ------
    StagingError
        An input is missing (``transient=False``, the message names its URL),
        or storage stayed unreachable through the retries (``transient=True``).
    """
    t0 = time.monotonic()
    io = _transfers(storage_options)
    workdir = Path(workdir)
    plan = [item for rf in inputs for item in _plan_input(rf, workdir, io)]
    cache = NodeCache(Path(cache_dir)) if cache_dir is not None else None
    done = io.run_all(plan, lambda item: _fetch(item, io, cache))
    return StageStats(nbytes=sum(n for n, _ in done), seconds=time.monotonic() - t0, files=len(done),
                      cache_hits=sum(hit for _, hit in done))


def _plan_input(rf: ResourceFile, workdir: Path, io: Transfers) -> list[_Fetch]:
    what = f"input {rf.path}"
    shown = io.scrub.url(rf.url)
    missing = f"input {rf.path}: {shown} not found"
    mode = int(rf.file_mode, 8) if rf.file_mode is not None else None
    fs, root = io.resolve(rf.url, what)
    if not rf.is_prefix:
        return [_Fetch(what, rf.url, fs, root, workdir / rf.path, mode, missing)]
    root = root.rstrip("/")
    listing = io.retry(lambda: fs.find(root, detail=True), what=what, url=rf.url, missing=missing)
    files = sorted((name, info) for name, info in listing.items() if info.get("type", "file") == "file")
    if not files:
        raise StagingError(missing, url=shown)
    base_url, _, query = rf.url.partition("?")
    items = []
    for name, info in files:
        rel = posixpath.normpath(name[len(root) + 1:] if name.startswith(root + "/") else posixpath.basename(name))
        if rel.startswith("../") or rel in ("..", ".") or rel.startswith("/"):
            raise StagingError(f"{what}: {io.scrub.text(name)} under {shown} would land outside the "
                               "working directory; rename the object", url=shown)
        url = base_url + rel + (f"?{query}" if query else "")
        items.append(_Fetch(what, url, fs, name, workdir / rf.path / rel, mode,
                            f"input {rf.path}: {io.scrub.url(url)} not found", info))
    return items


def _fetch(item: _Fetch, io: Transfers, cache: NodeCache | None) -> tuple[int, bool]:
    """Place one object at its target; returns its size and whether the cache had it."""
    def download(dest: Path) -> None:
        io.retry(lambda: item.fs.get_file(item.rpath, str(dest)), what=item.what, url=item.url,
                 missing=item.missing, writes=str(item.target))

    try:
        item.target.parent.mkdir(parents=True, exist_ok=True)
        info, key = item.info, None
        if cache is not None:
            if info is None:
                info = io.retry(lambda: item.fs.info(item.rpath), what=item.what, url=item.url,
                                missing=item.missing)
            if info.get("type", "file") != "file":
                shown = io.scrub.url(item.url)
                raise StagingError(f"{item.what}: {shown} is a folder; end the URL with '/' "
                                   "to fetch everything under it", url=shown)
            key = version_key(info)
        hit = False
        if key is not None:
            entry, hit = cache.fetch(item.url, key, info.get("size"), download)
            place(entry, item.target, private=item.mode is not None)
        else:
            # A temporary name first, so a failed download leaves no partial input behind.
            tmp = item.target.with_name(f".{item.target.name}.{uuid.uuid4().hex}.part")
            try:
                download(tmp)
                os.replace(tmp, item.target)
            finally:
                tmp.unlink(missing_ok=True)
        if item.mode is not None:
            os.chmod(item.target, item.mode)
        return item.target.stat().st_size, hit
    except OSError as exc:
        raise StagingError(f"{item.what}: cannot write {item.target}: {io.scrub.describe(exc)}",
                           url=io.scrub.url(item.url)) from None


# -- stage-out ---------------------------------------------------------------

@dataclass
class _Upload:
    what: str
    local: Path
    url: str
    fs: Any = None
    rpath: str = ""


def stage_out(outputs: tuple[OutputFile, ...], workdir: Path, *, job_id: str, task_id: str, attempt: int,
              outcome: str, storage_options: Mapping[str, Any], task_dir: Path) -> StageStats:
    """Upload the files of ``workdir`` (and the task dir's stdout/stderr) that ``outputs`` select.

    Parameters
    ----------
    outputs : tuple of OutputFile
        Glob, destination and upload condition of each output.
    workdir : Path
        The task's working directory, which patterns are relative to.
    job_id, task_id, attempt
        Values of the destination's ``{job_id}``, ``{task_id}`` and ``{attempt}``.
    outcome : {"success", "failure"}
        How the task ended; an output uploads when its ``upload_condition``
        is this or ``"completion"``.
    storage_options : dict
        Per protocol, as for :func:`stage_in`.
    task_dir : Path
        The folder holding ``stdout.txt`` and ``stderr.txt``.

    Returns
    -------
    StageStats

    Raises
    ------
    StagingError
        Several files match a single-file destination, or an upload failed
        (``transient`` tells whether storage was unreachable).
    """
    if outcome not in ("success", "failure"):
        raise SpecError("outcome", outcome, "expected 'success' or 'failure'")
    t0 = time.monotonic()
    wanted = [o for o in outputs if o.upload_condition in (outcome, "completion")]
    if not wanted:
        return StageStats()
    io = _transfers(storage_options)
    workdir, task_dir = Path(workdir), Path(task_dir)
    in_wd = globs.list_files(workdir)
    std = [name for name in STD_FILES if name not in in_wd and (task_dir / name).is_file()]
    plan: list[_Upload] = []
    for out in wanted:
        plan.extend(_plan_output(out, workdir, task_dir, in_wd, std, io,
                                 dict(job_id=job_id, task_id=task_id, attempt=attempt)))
    _make_parents(plan, io)
    done = io.run_all(plan, lambda up: _upload(up, io))
    return StageStats(nbytes=sum(done), seconds=time.monotonic() - t0, files=len(done))


def _plan_output(out: OutputFile, workdir: Path, task_dir: Path, in_wd: list[str], std: list[str],
                 io: Transfers, values: dict) -> list[_Upload]:
    what = f"output {out.pattern}"
    matches = [(workdir / path, rel) for path, rel in globs.match(out.pattern, in_wd)]
    if "/" not in out.pattern and out.pattern[0] not in "*?[":
        matches += [(task_dir / path, rel) for path, rel in globs.match(out.pattern, std)]
    if not matches:
        return []
    for local, rel in matches:
        globs.check_inside(local, task_dir, what, rel)
    dest = out.destination.format(**values)
    if dest.endswith("/"):
        base_url, _, query = dest.partition("?")
        return [_Upload(what, local, base_url + rel + (f"?{query}" if query else "")) for local, rel in matches]
    if len(matches) > 1:
        names = ", ".join(rel for _, rel in matches[:3]) + (", ..." if len(matches) > 3 else "")
        shown = io.scrub.url(dest)
        raise StagingError(f"{what}: {len(matches)} files match ({names}) but the destination {shown} is "
                           "a single file; end it with '/' to upload them into a folder", url=shown)
    return [_Upload(what, matches[0][0], dest)]


def _make_parents(plan: list[_Upload], io: Transfers) -> None:
    """Resolve each destination and create its folders once, before any upload; never a
    container (``CONTAINER_STORES``): an output to a missing one fails, as on Azure."""
    made: set[tuple[int, str]] = set()
    for up in plan:
        up.fs, up.rpath = io.resolve(up.url, up.what)
        if split_protocol(up.url)[0] in CONTAINER_STORES:
            continue
        parent = posixpath.dirname(up.rpath.rstrip("/"))
        if parent and (id(up.fs), parent) not in made:
            made.add((id(up.fs), parent))
            try:
                up.fs.mkdir(parent, create_parents=True)
            except Exception:  # noqa: BLE001 - best effort: it exists (the usual case); put_file
                pass           # reports real errors


def _upload(up: _Upload, io: Transfers) -> int:
    missing = None
    if split_protocol(up.url)[0] in CONTAINER_STORES:
        shown = io.scrub.url(up.url)
        container = up.rpath.lstrip("/").split("/", 1)[0]
        missing = (f"{up.what}: {shown}: container {container!r} does not exist; an output's container "
                   "is not created (nor by Azure Batch): create it before the task runs")
    io.retry(lambda: up.fs.put_file(str(up.local), up.rpath), what=up.what, url=up.url, missing=missing)
    return up.local.stat().st_size
