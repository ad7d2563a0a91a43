"""Storage plumbing for :mod:`batchnb.staging`: filesystems, retries, redaction.

Kept apart from the planning in ``staging.py`` so the policy (what to move
where) reads without the I/O details (how a transfer is retried, which
errors are worth retrying, how credentials stay out of messages).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, TypeVar

import cloudpickle
import fsspec
from fsspec.core import split_protocol
from fsspec.utils import tokenize

from .retry import RetryPolicy
from ..errors import StagingError

log = logging.getLogger("batchnb.staging")
T = TypeVar("T")

# adlfs serves all three names; options given under one serve the others.
ADLFS_PROTOCOLS = ("abfs", "az", "abfss")
# Stores whose mkdir makes a container (bucket): Azure Batch never creates an output's
# container, the upload fails (file_upload_error), so nothing is made on these before an
# upload. Their folders are only name prefixes, which need no making either.
CONTAINER_STORES = frozenset({*ADLFS_PROTOCOLS, "s3", "s3a", "gs", "gcs"})

# The Azure SDK's own retry policy waits 15 s, 18 s, 24 s between tries, so a
# stopped endpoint takes about 80 s to fail one call. Connection failures are
# left to our loop (batchnb.staging-retry-*, see retry.py); failures in the middle of a
# transfer keep two quick SDK retries, which repeat one request (a block, a
# range) rather than the whole file.
_AZURE_SDK_RETRY = {"total_retries": 2, "connect_retries": 0, "read_retries": 2, "status_retries": 2,
                    "initial_backoff": 0.5, "increment_base": 2, "random_jitter_range": 0.2}

# Exception class names (anywhere in the MRO) that mean "the store could not
# be reached or stopped answering": azure-core, aiohttp, botocore, fsspec.
_TRANSIENT_NAMES = frozenset({
    "ServiceRequestError", "ServiceResponseError", "IncompleteReadError",
    "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError",
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ResponseStreamingError",
    "FSTimeoutError",
})
_PERMANENT_OS = (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
# A full, read-only or over-quota local disk: no retry will make room.
_DISK_ERRNOS = frozenset(n for n in (errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", None), errno.EFBIG)
                         if n is not None)
MISSING, TRANSIENT, PERMANENT = "missing", "transient", "permanent"

# Options that name things rather than prove identity: shown in messages,
# because an account name hidden behind *** helps nobody. Any other string
# of storage_options counts as a secret.
_PUBLIC_OPTIONS = frozenset({"account_name", "account_host", "client_id", "tenant_id", "endpoint_url",
                             "region_name", "project", "location_mode", "username"})
_PASSWORD = re.compile(r"://([^/:@?]+):([^/@?]+)@")
_SECRET_FIELDS = re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|sig|password|secret|token|key)=([^;&\s'\"]+)")


# -- filesystems ---------------------------------------------------------

# At most this many filesystems per process, least recently used dropped
# first: options rebuilt per attempt must never pile up clients.
FS_CACHE_SIZE = 32
_fs_cache: OrderedDict[tuple, Any] = OrderedDict()
_fs_lock = threading.Lock()


def options_for(protocol: str, storage_options: Mapping[str, Any]) -> dict:
    """The options of ``protocol``; for adlfs those given under any of its names."""
    if protocol in storage_options:
        return dict(storage_options[protocol] or {})
    if protocol in ADLFS_PROTOCOLS:
        for name in ADLFS_PROTOCOLS:
            if name in storage_options:
                return dict(storage_options[name] or {})
    return {}


def resolve(url: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    """The filesystem serving ``url`` and the path it knows the object by.

    What the URL itself says (adlfs: the account of
    ``abfs://container@ACCOUNT.dfs.core.windows.net/...``) overrides
    ``storage_options``; a connection string for another account is refused
    rather than silently used.
    """
    protocol = split_protocol(url)[0] or "file"
    cls = fsspec.get_filesystem_class(protocol)
    options = options_for(protocol, storage_options)
    from_url = cls._get_kwargs_from_urls(url)
    if protocol in ADLFS_PROTOCOLS and from_url.get("account_name"):
        _check_account(from_url["account_name"], options)
    options.update(from_url)
    # One instance per process and option set, outside fsspec's own instance
    # cache: _tune_azure changes its retry policy, which the user's own
    # instance of the same store should not see. The pid keeps a forked
    # worker from reusing its parent's event loop.
    key = (os.getpid(), protocol, _options_key(protocol, options))
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            fs = cls(skip_instance_cache=True, **options)
            if protocol in ADLFS_PROTOCOLS:
                _tune_azure(fs)
            _fs_cache[key] = fs
            while len(_fs_cache) > FS_CACHE_SIZE:
                _fs_cache.popitem(last=False)
        else:
            _fs_cache.move_to_end(key)
    return fs, fs._strip_protocol(url)


def _options_key(protocol: str, options: Mapping[str, Any]) -> str:
    """A digest of the options that is the same for equal options unpickled again.

    Every attempt ships storage_options pickled, so a credential object in
    them is a new object each time; fsspec's tokenize hashes its repr (with
    its address) and would give every attempt a new filesystem. The bytes of
    its pickle are the same.
    """
    try:
        data = cloudpickle.dumps((protocol, sorted(options.items())))
    except Exception:  # noqa: BLE001 - unpicklable options (in-process use): the LRU bound still holds
        return tokenize(protocol, options)
    return hashlib.sha256(data).hexdigest()


def _check_account(account: str, options: Mapping[str, Any]) -> None:
    """Refuse options that would reach another storage account than the URL names."""
    conn = options.get("connection_string")
    if conn:
        fields = dict(part.split("=", 1) for part in str(conn).split(";") if "=" in part)
        theirs = fields.get("AccountName")
        if theirs is None:
            endpoint = re.match(r"https?://([^./:]+)\.blob\.", fields.get("BlobEndpoint", ""))
            theirs = endpoint.group(1) if endpoint else None
        if theirs is not None and theirs.lower() != account.lower():
            raise ValueError(f"the URL names storage account {account!r} but the connection_string of "
                             f"storage_options is for account {theirs!r}")
    host = options.get("account_host")
    if host and not str(host).lower().startswith(account.lower() + "."):
        raise ValueError(f"the URL names storage account {account!r} but storage_options' "
                         f"account_host is {host!r}")


def _tune_azure(fs: Any) -> None:
    policy = getattr(getattr(getattr(fs, "service_client", None), "_config", None), "retry_policy", None)
    for name, value in _AZURE_SDK_RETRY.items():
        if hasattr(policy, name):
            setattr(policy, name, value)


def version_key(info: Mapping[str, Any]) -> str | None:
    """What identifies this version of an object: etag, else checksum, else mtime; with the size.

    None when the store gives none of them (then the object is not cached).
    """
    for names in (("etag", "ETag", "e_tag"), ("content_md5", "md5", "md5Hash", "crc32c", "checksum"),
                  ("mtime", "last_modified", "LastModified", "updated", "created")):
        for name in names:
            value = info.get(name)
            if value is None and isinstance(info.get("content_settings"), Mapping):
                value = info["content_settings"].get(name)
            if value in (None, ""):
                continue
            if isinstance(value, (bytes, bytearray)):
                value = value.hex()
            elif isinstance(value, datetime):
                value = value.timestamp()
            return f"{name}={value};size={info.get('size')};ino={info.get('ino', '')}"
    return None


# -- errors --------------------------------------------------------------

def classify(exc: BaseException) -> str:
    """MISSING, TRANSIENT or PERMANENT, from the error or what it wraps."""
    seen = 0
    while exc is not None and seen < 6:
        if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "ResourceNotFoundError":
            return MISSING
        status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
        if isinstance(status, int):
            if status == 404:
                return MISSING
            return TRANSIENT if status >= 500 or status in (408, 429) else PERMANENT
        if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
            return TRANSIENT
        if isinstance(exc, _PERMANENT_OS) or (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS):
            return PERMANENT
        if isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError)):
            return TRANSIENT
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return PERMANENT


def disk_error(exc: BaseException | None) -> OSError | None:
    """The error of a local disk (full, read-only, no access) in ``exc`` or what it wraps, if any."""
    seen = 0
    while exc is not None and seen < 6:
        if isinstance(exc, OSError) and (exc.errno in _DISK_ERRNOS or (
                # A local file refused us (it has a name); a store's 403 mapped to PermissionError has none.
                exc.errno in (errno.EACCES, errno.EPERM) and exc.filename is not None)):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class Scrubber:
    """Removes the credentials of ``storage_options`` (and any URL's query) from text."""

    def __init__(self, storage_options: Mapping[str, Any]):
        secrets: set[str] = set()
        for name, value in _strings(storage_options):
            if name in _PUBLIC_OPTIONS:
                continue
            secrets.add(value)
            secrets.update(m.group(2) for m in _SECRET_FIELDS.finditer(value))
            if value.startswith("?"):
                secrets.add(value[1:])
        # Longest first, so that a connection string goes before the key inside it.
        self._secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _SECRET_FIELDS.sub(lambda m: f"{m.group(1)}=***", text)

    def url(self, url: str) -> str:
        """``url`` without its query (a SAS token lives there) or password."""
        base, sep, _query = url.partition("?")
        return self.text(_PASSWORD.sub(r"://\1:***@", base) + ("?***" if sep else ""))

    def describe(self, exc: BaseException) -> str:
        first = (str(exc).strip().splitlines() or [""])[0]
        return self.text(f"{type(exc).__name__}: {first}"[:300])


def _strings(value: Any, name: str = "") -> Iterable[tuple[str, str]]:
    """Every string in nested options, with the name of the option holding it."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, str(key))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, name)


# -- retries and parallel transfers ---------------------------------------

class Transfers:
    """Runs transfers in parallel with retries; the first final error stops the rest."""

    def __init__(self, storage_options: Mapping[str, Any], policy: RetryPolicy, concurrency: int):
        self.storage_options = storage_options
        self.scrub = Scrubber(storage_options)
        self.policy = policy
        self.concurrency = max(1, concurrency)
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._first_error: BaseException | None = None

    def resolve(self, url: str, what: str) -> tuple[Any, str]:
        try:
            return resolve(url, self.storage_options)
        except (ImportError, ValueError, TypeError) as exc:
            shown = self.scrub.url(url)
            raise StagingError(f"{what}: {shown}: cannot open its store ({self.scrub.describe(exc)}); "
                               "check the URL's protocol and the pool's storage_options", url=shown) from None

    def retry(self, call: Callable[[], T], *, what: str, url: str, missing: str | None = None,
              writes: str | None = None) -> T:
        """``call()`` with retries of transient errors.

        ``what`` names the input or output; ``missing`` is the message for a
        missing object (None: a missing object is a permanent error);
        ``writes`` the local file ``call`` writes, named when its disk fails.
        """
        shown = self.scrub.url(url)
        start = time.monotonic()
        first_failure = None
        tries = 0
        while True:
            tries += 1
            try:
                return call()
            except StagingError:
                raise
            except Exception as exc:  # noqa: BLE001 - every store raises its own types; classify() sorts them
                kind = classify(exc)
                if kind == MISSING and missing is not None:
                    raise StagingError(missing, url=shown) from None
                local = disk_error(exc) if writes is not None else None
                if kind != TRANSIENT and local is not None:
                    raise StagingError(f"{what}: cannot write {writes} on this node: "
                                       f"{local.strerror or self.scrub.describe(local)} (a local disk error, "
                                       "not retried)", url=shown) from None
                if kind != TRANSIENT:
                    raise StagingError(f"{what}: {shown}: {self.scrub.describe(exc)}", url=shown) from None
                now = time.monotonic()
                # The window runs from the first failure: a long transfer cut by a blip gets the
                # whole window, not what its successful part left of it.
                first_failure = first_failure if first_failure is not None else now
                sleep = None if self._abort.is_set() else self.policy.sleep_before(tries, now - first_failure)
                if sleep is None:
                    raise StagingError(
                        f"{what}: {shown}: storage unavailable after {tries} tries in {now - start:.1f}s "
                        f"({self.scrub.describe(exc)})",
                        url=shown, transient=True) from None
                log.info("%s: %s: %s; try %d in %.1fs (retrying for up to %gs)", what, shown,
                         self.scrub.describe(exc), tries + 1, sleep, self.policy.retry_for)
                if self._abort.wait(sleep):
                    raise StagingError(f"{what}: {shown}: stopped, another transfer failed",
                                       url=shown, transient=True) from None

    def run_all(self, items: list, work: Callable[[Any], T]) -> list[T]:
        """``work(item)`` for every item, up to ``concurrency`` at once; re-raises the first error."""
        if len(items) <= 1 or self.concurrency == 1:
            return [work(item) for item in items]

        def guarded(item):
            if self._abort.is_set():
                return None
            try:
                return work(item)
            except BaseException as exc:
                with self._lock:
                    # The first failure is the cause; later ones are mostly "stopped".
                    self._first_error = self._first_error or exc
                self._abort.set()
                raise

        with ThreadPoolExecutor(min(self.concurrency, len(items)), thread_name_prefix="batchnb-staging") as pool:
            futures = [pool.submit(guarded, item) for item in items]
            wait(futures, return_when=FIRST_EXCEPTION)
            if self._first_error is not None:
                for future in futures:
                    future.cancel()
                wait(futures)
                raise self._first_error
        return [future.result() for future in futures]
