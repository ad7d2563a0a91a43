"""The node-local input cache: one download per object version per node.

An entry is named by a hash of the URL and the object's version key (etag,
checksum or mtime, with the size), so a changed object is a new entry. Tasks
get hard links to it (a copy when the working dir is on another device),
which is why entries are read-only: a task that opened a linked input for
writing would change it for every other task on the node.

Read-only is not enough, though. A task running as root (containers, CI)
ignores the mode, and any task may ``chmod u+w`` the shared inode. So:

* when this process runs as root, tasks get copies, never links;
* each entry has a sidecar ``<entry>.stamp`` with the size, mode and mtime
  the entry had when it was written (its mtime set to a whole second in the
  past, so that a write within the same clock tick still changes it); a hit
  whose stat differs is an entry some task changed, and is fetched again.

Several threads and processes of one node may ask for the same entry at
once: the first takes an exclusive lock on ``<entry>.lock`` and downloads to
a temporary name, then renames it into place; the others wait on the lock
and find the entry there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no lock; temp name + rename still keep entries whole
    fcntl = None

ENTRY_MODE = 0o444


class NodeCache:
    """Downloaded objects under ``root``, keyed by URL and version.

    >>> import tempfile
    >>> cache = NodeCache(Path(tempfile.mkdtemp()))
    >>> entry, hit = cache.fetch("memory://b/x", "etag=1", 2, lambda p: p.write_bytes(b"hi"))
    >>> entry.read_bytes(), cache.fetch("memory://b/x", "etag=1", 2, lambda p: None)[1]
    (b'hi', True)
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def entry(self, url: str, key: str) -> Path:
        digest = hashlib.sha256(f"{url}\0{key}".encode()).hexdigest()
        # Two-level layout: a node that ran many jobs keeps small directories.
        return self.root / digest[:2] / digest

    def fetch(self, url: str, key: str, size: int | None, download: Callable[[Path], None]) -> tuple[Path, bool]:
        """The entry of ``url`` at version ``key``, made by ``download(tmp_path)`` if absent.

        Returns the entry's path and whether it was already there (or made
        by another thread or process while this one waited).
        """
        entry = self.entry(url, key)
        if _intact(entry, size):
            return entry, True
        entry.parent.mkdir(parents=True, exist_ok=True)
        with _locked(entry.with_name(entry.name + ".lock")):
            if _intact(entry, size):
                return entry, True
            tmp = entry.with_name(f"{entry.name}.{uuid.uuid4().hex}.part")
            stamp_tmp = tmp.with_suffix(".stamp")
            try:
                download(tmp)
                os.chmod(tmp, ENTRY_MODE)
                # A whole second in the past: any later write moves the mtime
                # to "now", even one in the same tick of a coarse clock.
                then = (time.time_ns() // 10**9 - 1) * 10**9
                os.utime(tmp, ns=(then, then))
                stamp_tmp.write_text(_stamp(tmp.stat()))
                # The stamp first: an entry without its stamp counts as absent.
                os.replace(stamp_tmp, _stamp_path(entry))
                os.replace(tmp, entry)
            finally:
                tmp.unlink(missing_ok=True)
                stamp_tmp.unlink(missing_ok=True)
        return entry, False


def _stamp_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".stamp")


def _stamp(st: os.stat_result) -> str:
    return f"size={st.st_size} mode={st.st_mode:o} mtime_ns={st.st_mtime_ns}"


def _intact(entry: Path, size: int | None) -> bool:
    """The entry exists, has the expected size, and is as it was written (else it is fetched again)."""
    try:
        st = entry.stat()
        recorded = _stamp_path(entry).read_text()
    except FileNotFoundError:
        return False
    return (size is None or st.st_size == size) and recorded == _stamp(st)


def links_allowed() -> bool:
    """Whether tasks may get hard links to entries: not when running as root, which ignores 0o444."""
    return not (hasattr(os, "geteuid") and os.geteuid() == 0)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # flock belongs to the open file description, so it excludes the other
    # threads of this process (each opens its own) as well as other processes.
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def place(entry: Path, target: Path, *, private: bool) -> None:
    """Put ``entry`` at ``target``: a hard link, or a copy when linking fails, ``private`` or root."""
    target.unlink(missing_ok=True)
    if not private and links_allowed():
        try:
            os.link(entry, target)
            return
        except OSError:  # another device, a link-count limit, a filesystem without links
            pass
    shutil.copyfile(entry, target)
    if not private:
        # Read-only like a link would be, so that a task sees the same file
        # whichever way its input arrived.
        os.chmod(target, ENTRY_MODE)
