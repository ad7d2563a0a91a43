"""The node-local input cache: one download per object version per node.

An entry is named by a hash of the URL and the object's version key (etag,
checksum or mtime, with the size), so a changed object is a new entry and an
entry never needs invalidating. Tasks get hard links to it (a copy when the
working dir is on another device), which is why entries are read-only: a
task that opened a linked input for writing would change it for every other
task on the node.

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
        if _whole(entry, size):
            return entry, True
        entry.parent.mkdir(parents=True, exist_ok=True)
        with _locked(entry.with_name(entry.name + ".lock")):
            if _whole(entry, size):
                return entry, True
            tmp = entry.with_name(f"{entry.name}.{uuid.uuid4().hex}.part")
            try:
                download(tmp)
                os.chmod(tmp, ENTRY_MODE)
                os.replace(tmp, entry)
            finally:
                tmp.unlink(missing_ok=True)
        return entry, False


def _whole(entry: Path, size: int | None) -> bool:
    """The entry exists and has the expected size (a truncated file is fetched again)."""
    try:
        found = entry.stat().st_size
    except FileNotFoundError:
        return False
    return size is None or found == size


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
    """Put ``entry`` at ``target``: a hard link, or a copy when linking fails or ``private``."""
    target.unlink(missing_ok=True)
    if not private:
        try:
            os.link(entry, target)
            return
        except OSError:  # another device, a link-count limit, a filesystem without links
            pass
    shutil.copyfile(entry, target)
