"""The ledger's files are their owner's only: 0600 for the database, its -wal and -shm.

A new ledger is made by ``mkstemp`` (0600) and SQLite gives the -wal and -shm it creates
the database file's mode, so this matters for a ledger an older batchnb made (0644).
"""

from __future__ import annotations

import os
import stat


def tighten(path) -> None:
    """Drop group and other access to the ledger at ``path`` and its WAL and SHM, where we own them."""
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            st = os.stat(name)
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.chmod(name, stat.S_IMODE(st.st_mode) & 0o700)
        except OSError:     # not there (yet), or not ours: SQLite keeps the mode it finds
            pass
