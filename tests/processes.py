"""Whether a process runs, for the tests that check what was killed.

``psutil.pid_exists(p) and psutil.Process(p).status()`` asks twice, and a process that ends
between the two asks raised ``NoSuchProcess`` in the middle of an assertion (CI saw it).
"""

from __future__ import annotations

import psutil


def alive(pid: int) -> bool:
    """The process runs: not gone, not a zombie (ended, not yet reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
