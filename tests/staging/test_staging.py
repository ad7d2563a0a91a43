"""Stage-in and stage-out: memory:// and file:// (which must behave alike), then Azurite through adlfs."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import pickle
import os
import stat
import threading
import time
import uuid
from pathlib import Path

import dask.config
import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from batchnb.staging import cache as _staging_cache, storage as _staging_io
from batchnb import staging
from batchnb.staging.patterns import match
from batchnb.staging.storage import MISSING, PERMANENT, TRANSIENT, classify, resolve
from batchnb.errors import SpecError, StagingError
from batchnb.spec import OutputFile, ResourceFile

from azurite_fixture import ACCOUNT_KEY


# -- stores ------------------------------------------------------------------

class Store:
    """A place for inputs and outputs, addressed by URL."""

    def __init__(self, protocol: str, root: str):
        self.protocol, self.root = protocol, root.rstrip("/")
        self.fs = fsspec.filesystem(protocol)

    def url(self, rel: str) -> str:
        return f"{self.protocol}://{self.root}/{rel}"

    def put(self, rel: str, data: bytes) -> str:
        path = f"{self.root}/{rel}"
        self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        self.fs.pipe_file(path, data)
        return self.url(rel)

    def cat(self, rel: str) -> bytes:
        return self.fs.cat_file(f"{self.root}/{rel}")

    def files(self, rel: str = "") -> list[str]:
        base = f"{self.root}/{rel}".rstrip("/")
        return sorted(p[len(base) + 1:] for p in self.fs.find(base))


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    if request.param == "memory":
        return Store("memory", f"/t{uuid.uuid4().hex[:12]}")
    return Store("file", str(tmp_path / "store"))


@pytest.fixture
def task_dir(tmp_path):
    """Laid out as the runner does: stdout.txt/stderr.txt here, the working dir in wd/."""
    (tmp_path / "task" / "wd").mkdir(parents=True)
    return tmp_path / "task"


@pytest.fixture
def wd(task_dir):
    return task_dir / "wd"


@pytest.fixture
def fast_retries():
    with dask.config.set({"batchnb.staging-retry-delay": 0.01}):
        yield


@pytest.fixture
def non_root(monkeypatch):
    """Place cached inputs as for a worker not running as root: hard links (root gets copies)."""
    monkeypatch.setattr(_staging_cache, "links_allowed", lambda: True)


def stage_out(outputs, wd, task_dir, outcome="success", storage_options=None, attempt=1):
    return staging.stage_out(tuple(outputs), wd, job_id="job1", task_id="t1", attempt=attempt, outcome=outcome,
                             storage_options=storage_options or {}, task_dir=task_dir)


# -- test filesystems that count or fail ----------------------------------------

class CountingFS(MemoryFileSystem):
    """memory:// under another name; counts downloads, each slow enough for stagings to overlap."""

    protocol = "countmem"
    downloads = 0
    lock = threading.Lock()

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("countmem://", "memory://", 1))

    def get_file(self, rpath, lpath, **kwargs):
        with CountingFS.lock:
            CountingFS.downloads += 1
        time.sleep(0.1)
        return super().get_file(rpath, lpath, **kwargs)


class NoVersionFS(CountingFS):
    """A store whose info() gives no etag, checksum or time: nothing to key a cache entry by."""

    protocol = "noversion"

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(path.replace("noversion://", "memory://", 1))

    def info(self, path, **kwargs):
        return {k: v for k, v in super().info(path, **kwargs).items() if k != "created"}


class FlakyFS(MemoryFileSystem):
    """Refuses the first ``failures`` calls with ConnectionResetError (a transient error)."""

    protocol = "flaky"
    failures = 0
    calls = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("flaky://", "memory://", 1))

    def get_file(self, rpath, lpath, **kwargs):
        FlakyFS.calls += 1
        if FlakyFS.calls <= FlakyFS.failures:
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().get_file(rpath, lpath, **kwargs)


class LeakyFS(MemoryFileSystem):
    """A store whose errors echo its credential, as some client libraries' errors do."""

    protocol = "leaky"

    def __init__(self, token=None, **kwargs):
        super().__init__(**kwargs)
        self.token = token

    def get_file(self, rpath, lpath, **kwargs):
        raise PermissionError(f"403 for {rpath} with token={self.token} (Authorization: Bearer {self.token})")


class DiskFullFS(MemoryFileSystem):
    """A store whose downloads fail writing the local file, as on a full node disk."""

    protocol = "diskfull"
    calls = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("diskfull://", "memory://", 1))

    def get_file(self, rpath, lpath, **kwargs):
        DiskFullFS.calls += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Credential:
    """Stands for an Azure credential object: compared by identity, so each unpickled copy is new."""

    def __init__(self, secret):
        self.secret = secret


class CredFS(MemoryFileSystem):
    """memory:// taking a ``credential`` option, as adlfs does."""

    protocol = "credmem"

    def __init__(self, credential=None, **kwargs):
        super().__init__(**kwargs)
        self.credential = credential


class CountingLocalFS(LocalFileSystem):
    """file:// under another name; counts downloads in a counter shared across processes."""

    protocol = "countfile"
    counter = None  # a multiprocessing.Value, set by the test

    @classmethod
    def _strip_protocol(cls, path):
        return LocalFileSystem._strip_protocol(path.replace("countfile://", "file://", 1))

    def get_file(self, rpath, lpath, **kwargs):
        with CountingLocalFS.counter.get_lock():
            CountingLocalFS.counter.value += 1
        time.sleep(0.3)
        return super().get_file(rpath, lpath, **kwargs)


for _cls in (CountingFS, NoVersionFS, FlakyFS, LeakyFS, CountingLocalFS, DiskFullFS, CredFS):
    fsspec.register_implementation(_cls.protocol, _cls, clobber=True)


# -- inputs ----------------------------------------------------------------------

def test_file_input_lands_at_its_path_with_parents(store, wd):
    url = store.put("photos/1.jpg", b"jpeg bytes")
    stats = staging.stage_in((ResourceFile("in/deep/1.jpg", url),), wd, storage_options={}, cache_dir=None)
    assert (wd / "in/deep/1.jpg").read_bytes() == b"jpeg bytes"
    assert (stats.files, stats.nbytes, stats.cache_hits) == (1, 10, 0)


def test_prefix_input_keeps_relative_paths(store, wd):
    store.put("set/a.txt", b"a")
    store.put("set/sub/b.txt", b"bb")
    store.put("setting.txt", b"not under the prefix")
    stats = staging.stage_in((ResourceFile("data", store.url("set/")),), wd, storage_options={}, cache_dir=None)
    assert sorted(str(p.relative_to(wd)) for p in wd.rglob("*") if p.is_file()) == ["data/a.txt", "data/sub/b.txt"]
    assert (wd / "data/sub/b.txt").read_bytes() == b"bb"
    assert (stats.files, stats.nbytes) == (2, 3)


@pytest.mark.parametrize("cached", [False, True])
def test_file_mode_is_applied(store, wd, tmp_path, cached):
    url = store.put("run.sh", b"#!/bin/sh\necho hi\n")
    cache = tmp_path / "cache" if cached else None
    staging.stage_in((ResourceFile("bin/run.sh", url, file_mode="0750"), ResourceFile("plain.sh", url)), wd,
                     storage_options={}, cache_dir=cache)
    assert stat.S_IMODE((wd / "bin/run.sh").stat().st_mode) == 0o750
    if cached:
        # A file_mode gets a private copy; the cache entry (and its other links) stay read-only.
        assert stat.S_IMODE((wd / "plain.sh").stat().st_mode) == 0o444
        assert (wd / "bin/run.sh").stat().st_ino != (wd / "plain.sh").stat().st_ino


def test_path_escape_is_refused_at_spec_time():
    with pytest.raises(SpecError, match="inside the task's working directory"):
        ResourceFile("../outside.txt", "memory://b/x")


@pytest.mark.parametrize("rel", ["nope.txt", "nope/"])
def test_missing_input_names_its_url_and_is_not_transient(store, wd, rel):
    url = store.url(rel)
    with pytest.raises(StagingError) as info:
        staging.stage_in((ResourceFile("in.txt", url),), wd, storage_options={}, cache_dir=None)
    assert str(info.value) == f"input in.txt: {url} not found"
    assert info.value.url == url and info.value.transient is False


# -- the node cache --------------------------------------------------------------

def test_cache_downloads_once_for_concurrent_stagings(tmp_path, non_root):
    fsspec.filesystem("memory").pipe("/cachetest/model.bin", b"m" * 1000)
    CountingFS.downloads = 0
    cache, n = tmp_path / "cache", 6
    wds = [tmp_path / f"wd{i}" for i in range(n)]
    stats = [None] * n
    barrier = threading.Barrier(n)

    def stage(i):
        barrier.wait()
        stats[i] = staging.stage_in((ResourceFile("model.bin", "countmem://cachetest/model.bin"),), wds[i],
                                    storage_options={}, cache_dir=cache)

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert CountingFS.downloads == 1
    assert sum(s.cache_hits for s in stats) == n - 1
    assert all((w / "model.bin").read_bytes() == b"m" * 1000 for w in wds)
    assert (wds[0] / "model.bin").stat().st_nlink == n + 1   # hard links to one cache entry


def _stage_from_process(url, wd, cache):
    staging.stage_in((ResourceFile("big.bin", url),), Path(wd), storage_options={}, cache_dir=Path(cache))


def test_cache_downloads_once_across_processes(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(4096))
    ctx = multiprocessing.get_context("fork")
    CountingLocalFS.counter = ctx.Value("i", 0)
    procs = [ctx.Process(target=_stage_from_process, args=(f"countfile://{src}", tmp_path / f"wd{i}", tmp_path / "c"))
             for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert CountingLocalFS.counter.value == 1
    assert all((tmp_path / f"wd{i}/big.bin").read_bytes() == src.read_bytes() for i in range(3))


def test_changed_object_is_a_new_cache_entry(store, tmp_path):
    url = store.put("data.csv", b"v1")
    cache = tmp_path / "cache"
    staging.stage_in((ResourceFile("d.csv", url),), tmp_path / "a", storage_options={}, cache_dir=cache)
    time.sleep(0.01)  # a new mtime for file://
    store.put("data.csv", b"version 2")
    stats = staging.stage_in((ResourceFile("d.csv", url),), tmp_path / "b", storage_options={}, cache_dir=cache)
    assert (tmp_path / "b/d.csv").read_bytes() == b"version 2" and stats.cache_hits == 0
    assert (tmp_path / "a/d.csv").read_bytes() == b"v1"


def _write_through(path: Path, data: bytes) -> None:
    """What a careless task does to its input: root writes through 0o444; anyone else chmods first."""
    if os.geteuid() != 0:
        os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(data)


@pytest.mark.parametrize("as_root", [True, False])
def test_a_task_writing_its_cached_input_does_not_change_it_for_later_tasks(tmp_path, monkeypatch, as_root):
    src = tmp_path / "m.bin"
    src.write_bytes(b"original model bytes")
    if not as_root:   # links, as for a non-root worker: the stamp must notice the change
        monkeypatch.setattr(_staging_cache, "links_allowed", lambda: True)
    cache, rf = tmp_path / "cache", ResourceFile("m.bin", f"file://{src}")
    staging.stage_in((rf,), tmp_path / "w1", storage_options={}, cache_dir=cache)
    _write_through(tmp_path / "w1/m.bin", b"CORRUPT!")   # at once: within the same clock tick
    stats = staging.stage_in((rf,), tmp_path / "w2", storage_options={}, cache_dir=cache)
    assert (tmp_path / "w2/m.bin").read_bytes() == b"original model bytes"
    assert stats.cache_hits == (1 if as_root and os.geteuid() == 0 else 0)


def test_root_gets_read_only_copies_and_a_changed_entry_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setattr(_staging_cache, "links_allowed", lambda: False)   # as root
    src = tmp_path / "m.bin"
    src.write_bytes(b"0123456789")
    cache, rf = tmp_path / "cache", ResourceFile("m.bin", f"file://{src}")
    staging.stage_in((rf,), tmp_path / "w1", storage_options={}, cache_dir=cache)
    placed = tmp_path / "w1/m.bin"
    [entry] = [p for p in cache.rglob("*") if p.is_file() and p.read_bytes() == b"0123456789"]
    assert placed.stat().st_nlink == 1 and entry.stat().st_nlink == 1
    assert stat.S_IMODE(placed.stat().st_mode) == 0o444
    # Someone changes the entry itself (same size, so only the stamp can tell).
    os.chmod(entry, 0o644)
    entry.write_bytes(b"XXXXXXXXXX")
    os.chmod(entry, 0o444)
    stats = staging.stage_in((rf,), tmp_path / "w2", storage_options={}, cache_dir=cache)
    assert (tmp_path / "w2/m.bin").read_bytes() == b"0123456789" and stats.cache_hits == 0
    assert staging.stage_in((rf,), tmp_path / "w3", storage_options={}, cache_dir=cache).cache_hits == 1


def test_no_version_key_means_no_caching(tmp_path):
    fsspec.filesystem("memory").pipe("/nover/x.bin", b"x")
    CountingFS.downloads = 0
    for name in "ab":
        staging.stage_in((ResourceFile("x.bin", "noversion://nover/x.bin"),), tmp_path / name,
                         storage_options={}, cache_dir=tmp_path / "cache")
    assert CountingFS.downloads == 2
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


# -- outputs ---------------------------------------------------------------------

def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def test_glob_outputs_with_doublestar_and_templating(store, wd, task_dir):
    _touch(wd, "a.png", "sub/b.png", "sub/deep/c.png", "x.txt")
    stats = stage_out([OutputFile("**/*.png", store.url("out/{job_id}/{task_id}/{attempt}/"))], wd, task_dir,
                      attempt=2)
    assert store.files("out/job1/t1/2") == ["a.png", "sub/b.png", "sub/deep/c.png"]
    assert store.cat("out/job1/t1/2/sub/deep/c.png") == b"sub/deep/c.png"
    assert (stats.files, stats.nbytes) == (3, len("a.png") + len("sub/b.png") + len("sub/deep/c.png"))


def test_folder_destination_keeps_paths_below_the_glob_base(store, wd, task_dir):
    _touch(wd, "res/a/1.json", "res/b/2.json", "res/top.json")
    stage_out([OutputFile("res/*/?.json", store.url("o/"))], wd, task_dir)
    assert store.files("o") == ["a/1.json", "b/2.json"]


def test_glob_wildcards_follow_azure():
    paths = ["a.txt", "b.txt", "c.txt", "d/a.txt", ".hidden"]
    assert [p for p, _ in match("[ab].txt", paths)] == ["a.txt", "b.txt"]
    assert [p for p, _ in match("[!ab].txt", paths)] == ["c.txt"]
    assert [p for p, _ in match("*", paths)] == ["a.txt", "b.txt", "c.txt", ".hidden"]
    assert [p for p, _ in match("**/a.txt", paths)] == ["a.txt", "d/a.txt"]


def test_stdout_and_stderr_upload_like_outputs(store, wd, task_dir):
    (task_dir / "stdout.txt").write_text("out")
    (task_dir / "stderr.txt").write_text("err")
    _touch(wd, "result.txt")
    stage_out([OutputFile("std*.txt", store.url("logs/{task_id}/")),
               OutputFile("stdout.txt", store.url("single/stdout-{attempt}.txt")),
               OutputFile("*.txt", store.url("results/"))], wd, task_dir)
    assert store.files("logs/t1") == ["stderr.txt", "stdout.txt"]
    assert store.cat("single/stdout-1.txt") == b"out"
    # A pattern starting with a wildcard covers the working dir only, as Azure's does.
    assert store.files("results") == ["result.txt"]


@pytest.mark.parametrize("outcome, expected", [("success", ["completion", "success"]),
                                               ("failure", ["completion", "failure"])])
def test_upload_conditions(store, wd, task_dir, outcome, expected):
    _touch(wd, "r.txt")
    outs = [OutputFile("r.txt", store.url(f"{cond}/"), cond) for cond in ("success", "failure", "completion")]
    stats = stage_out(outs, wd, task_dir, outcome=outcome)
    assert sorted(p.split("/")[0] for p in store.files()) == expected
    assert stats.files == 2


def test_single_file_destination(store, wd, task_dir):
    _touch(wd, "only.csv", "p1.log", "p2.log")
    stage_out([OutputFile("*.csv", store.url("final/result.csv"))], wd, task_dir)
    assert store.cat("final/result.csv") == b"only.csv"
    with pytest.raises(StagingError, match=r"2 files match \(p1.log, p2.log\).*end it with '/'"):
        stage_out([OutputFile("*.log", store.url("final/log.txt"))], wd, task_dir)


def test_pattern_matching_nothing_is_no_error(store, wd, task_dir):
    assert stage_out([OutputFile("*.none", store.url("x/"))], wd, task_dir).files == 0


# -- retries and error kinds ----------------------------------------------------------

def test_transient_error_is_retried_then_succeeds(wd, fast_retries):
    fsspec.filesystem("memory").pipe("/flaky/x", b"ok")
    FlakyFS.calls, FlakyFS.failures = 0, 2
    staging.stage_in((ResourceFile("x", "flaky://flaky/x"),), wd, storage_options={}, cache_dir=None)
    assert (wd / "x").read_bytes() == b"ok" and FlakyFS.calls == 3


def test_transient_error_gives_up_at_the_end_of_the_window(wd):
    fsspec.filesystem("memory").pipe("/flaky/y", b"ok")
    FlakyFS.calls, FlakyFS.failures = 0, 10**6
    t0 = time.monotonic()
    with dask.config.set({"batchnb.staging-retry-for": "1s", "batchnb.staging-retry-delay": "0.2s",
                          "batchnb.staging-retry-jitter": 0}):
        with pytest.raises(StagingError, match="storage unavailable after 4 tries") as info:
            staging.stage_in((ResourceFile("y", "flaky://flaky/y"),), wd, storage_options={}, cache_dir=None)
    assert info.value.transient and 1.0 <= time.monotonic() - t0 < 1.5   # sleeps of 0.2, 0.4, 0.4 (cut)
    assert not list(wd.iterdir())   # no partial file left behind


def test_error_kinds_of_the_azure_stack():
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceNotFoundError,
                                       ServiceRequestError, ServiceResponseError)

    def status(cls, code):
        err = cls(message=f"status {code}")
        err.status_code = code
        return err

    wrapped = RuntimeError("Failed to upload block")
    wrapped.__cause__ = ServiceRequestError("Cannot connect to host")
    assert classify(ServiceRequestError("Cannot connect to host 127.0.0.1:1")) == TRANSIENT   # Azurite down
    assert classify(ServiceResponseError("Connection reset")) == TRANSIENT
    assert classify(status(HttpResponseError, 503)) == TRANSIENT
    assert classify(wrapped) == TRANSIENT
    assert classify(ConnectionRefusedError()) == TRANSIENT
    assert classify(status(ClientAuthenticationError, 403)) == PERMANENT
    assert classify(PermissionError()) == PERMANENT
    assert classify(ResourceNotFoundError("no blob")) == MISSING
    assert classify(FileNotFoundError()) == MISSING


def test_full_or_read_only_local_disk_is_permanent_and_says_so(wd, fast_retries):
    for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        assert classify(OSError(code, os.strerror(code))) == PERMANENT
    assert classify(OSError(errno.ECONNRESET, "reset")) == TRANSIENT
    fsspec.filesystem("memory").pipe("/diskfull/y", b"ok")
    DiskFullFS.calls = 0
    with pytest.raises(StagingError) as info:
        staging.stage_in((ResourceFile("y", "diskfull://diskfull/y"),), wd, storage_options={}, cache_dir=None)
    assert str(info.value) == (f"input y: cannot write {wd / 'y'} on this node: No space left on device "
                               "(a local disk error, not retried)")
    assert not info.value.transient and DiskFullFS.calls == 1


def test_credential_objects_do_not_make_a_filesystem_per_attempt():
    shipped = pickle.dumps({"credmem": {"credential": Credential("s3cret")}})
    copies = [pickle.loads(shipped) for _ in range(40)]   # each attempt unpickles its own
    assert len({id(resolve("credmem://b/x", opts)[0]) for opts in copies}) == 1
    for i in range(2 * _staging_io.FS_CACHE_SIZE):
        resolve("credmem://b/x", {"credmem": {"credential": Credential(f"other-{i}")}})
    assert len(_staging_io._fs_cache) <= _staging_io.FS_CACHE_SIZE


def test_the_account_in_an_abfs_url_wins_over_storage_options():
    fs, path = resolve("abfs://data@acct1.dfs.core.windows.net/in/x.bin", {})
    assert (fs.account_name, path) == ("acct1", "data/in/x.bin")
    fs, _ = resolve("az://data@acct2.blob.core.windows.net/x", {"az": {"account_name": "acct1", "anon": True}})
    assert fs.account_name == "acct2"


# -- Azurite through adlfs --------------------------------------------------------------

def test_azurite_inputs_outputs_and_cache(azurite, azurite_container, wd, task_dir, tmp_path):
    fs, c = azurite.fs(), azurite_container
    fs.pipe({f"{c}/in/a.txt": b"A", f"{c}/in/sub/b.txt": b"BB"})
    # Options given under "abfs" serve az:// URLs too.
    opts = {"abfs": azurite.storage_options["abfs"]}
    stats = staging.stage_in((ResourceFile("a.txt", f"az://{c}/in/a.txt"), ResourceFile("all", f"az://{c}/in/")),
                             wd, storage_options=opts, cache_dir=tmp_path / "cache")
    assert (wd / "a.txt").read_bytes() == b"A" and (wd / "all/sub/b.txt").read_bytes() == b"BB"
    assert (stats.files, stats.nbytes, stats.cache_hits) == (3, 4, 1)   # all/a.txt is the same blob as a.txt
    (task_dir / "stdout.txt").write_text("hello")
    stats = stage_out([OutputFile("**/*.txt", f"abfs://{c}/out/{{task_id}}/"), OutputFile("stdout.txt", f"az://{c}/log/")],
                      wd, task_dir, storage_options=opts)
    assert sorted(fs.find(f"{c}/out")) == [f"{c}/out/t1/a.txt", f"{c}/out/t1/all/a.txt", f"{c}/out/t1/all/sub/b.txt"]
    assert fs.cat(f"{c}/log/stdout.txt") == b"hello" and stats.files == 4


def test_azurite_cache_serves_concurrent_tasks_from_one_download(azurite, azurite_container, tmp_path):
    fs, c = azurite.fs(), azurite_container
    fs.pipe(f"{c}/shared.bin", os.urandom(256 * 1024))
    results = []

    def stage(i):
        results.append(staging.stage_in((ResourceFile("s.bin", f"az://{c}/shared.bin"),), tmp_path / f"w{i}",
                                        storage_options=azurite.storage_options, cache_dir=tmp_path / "cache"))

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.cache_hits for r in results) == [0, 1, 1, 1]
    assert (tmp_path / "w3/s.bin").read_bytes() == fs.cat(f"{c}/shared.bin")


def test_azurite_missing_input(azurite, azurite_container, wd):
    url = f"az://{azurite_container}/no/such.blob"
    with pytest.raises(StagingError) as info:
        staging.stage_in((ResourceFile("x", url),), wd, storage_options=azurite.storage_options, cache_dir=None)
    assert str(info.value) == f"input x: {url} not found" and not info.value.transient


# adlfs warns when it cannot tell whether a container exists (Azurite stopped, or a bad name).
_ADLFS_CONTAINER_WARNING = "ignore:Failed to fetch container properties:UserWarning"


@pytest.mark.filterwarnings(_ADLFS_CONTAINER_WARNING)
def test_azurite_stopped_gives_a_transient_error_in_bounded_time(azurite, azurite_container, wd, task_dir,
                                                                 caplog):
    c = azurite_container
    azurite.fs().pipe(f"{c}/x.txt", b"x")
    _touch(wd, "o.txt")
    messages = []
    azurite.stop()
    try:
        with caplog.at_level(logging.INFO, logger="batchnb.staging"), \
                dask.config.set({"batchnb.staging-retry-for": "3s"}):
            t0 = time.monotonic()
            with pytest.raises(StagingError) as info:
                staging.stage_in((ResourceFile("x.txt", f"az://{c}/x.txt"),), wd / "in",
                                 storage_options=azurite.storage_options, cache_dir=task_dir / "cache")
            assert info.value.transient and 3 <= time.monotonic() - t0 < 3 + 5
            assert "storage unavailable" in str(info.value) and f"az://{c}/x.txt" in str(info.value)
            messages.append(str(info.value))
            with pytest.raises(StagingError) as info:
                stage_out([OutputFile("o.txt", f"az://{c}/out/")], wd, task_dir,
                          storage_options=azurite.storage_options)
            assert info.value.transient
            messages.append(str(info.value))
    finally:
        azurite.start()
    messages += [r.getMessage() for r in caplog.records]
    assert all(ACCOUNT_KEY not in m and "AccountKey" not in m for m in messages)
    stats = staging.stage_in((ResourceFile("x.txt", f"az://{c}/x.txt"),), wd / "again",
                             storage_options=azurite.storage_options, cache_dir=None)
    assert stats.files == 1


@pytest.mark.filterwarnings(_ADLFS_CONTAINER_WARNING)
def test_no_credential_in_any_error_message(azurite, azurite_container, wd, task_dir):
    so = {**azurite.storage_options, "leaky": {"token": "TOPSECRET-bearer"}}
    secret_sas = "sv=2024&sig=TOPSECRETsignature%3D"
    errors = []
    for call in [
        lambda: staging.stage_in((ResourceFile("a", f"az://{azurite_container}/missing"),), wd,
                                 storage_options=so, cache_dir=None),
        lambda: staging.stage_in((ResourceFile("a", f"memory://nowhere/x?{secret_sas}"),), wd,
                                 storage_options=so, cache_dir=None),
        lambda: staging.stage_in((ResourceFile("a", "leaky://b/x"),), wd, storage_options=so, cache_dir=None),
        lambda: stage_out([OutputFile("*.txt", "az://Bad_Container_Name!/x/")], wd, task_dir, storage_options=so),
        lambda: stage_out([OutputFile("*.txt", f"az://{azurite_container}/one.txt")], wd, task_dir,
                          storage_options=so),
    ]:
        _touch(wd, "p.txt", "q.txt")
        with pytest.raises(StagingError) as info:
            call()
        errors.append(f"{info.value} {info.value.url}")
    assert "PermissionError: 403 for" in errors[2]   # the cause is shown, its credential is not
    for text in errors:
        assert ACCOUNT_KEY not in text and azurite.connection_string not in text
        assert "TOPSECRET" not in text


def test_azurite_url_naming_another_account_does_not_land_in_azurite(azurite, azurite_container, wd, task_dir):
    c, fs = azurite_container, azurite.fs()
    fs.pipe(f"{c}/x.txt", b"azurite")
    ok = staging.stage_in((ResourceFile("x.txt", f"abfs://{c}@devstoreaccount1.dfs.core.windows.net/x.txt"),),
                          wd / "ok", storage_options=azurite.storage_options, cache_dir=None)
    assert ok.files == 1 and (wd / "ok/x.txt").read_bytes() == b"azurite"
    other = f"abfs://{c}@otheraccount.dfs.core.windows.net"
    with pytest.raises(StagingError, match="names storage account 'otheraccount' but the connection_string of "
                                           "storage_options is for account 'devstoreaccount1'") as info:
        staging.stage_in((ResourceFile("x.txt", f"{other}/x.txt"),), wd / "in",
                         storage_options=azurite.storage_options, cache_dir=None)
    assert not info.value.transient and ACCOUNT_KEY not in str(info.value)
    _touch(wd, "o.txt")
    with pytest.raises(StagingError, match="otheraccount"):
        stage_out([OutputFile("o.txt", f"{other}/out/")], wd, task_dir, storage_options=azurite.storage_options)
    assert not fs.exists(f"{c}/out")
