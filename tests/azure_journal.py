"""The journal of the Azure stand-in (tests/azure_standin.py): what a copy of it did in another process.

A detached pool's agent gets its own copy of the stand-in SDK and VM host (pickled in its boot
message); given a journal file, that copy appends every SDK call and every VM process it starts,
one JSON object a line. A test reads the calls (:func:`journal_calls`) and stops, by pid, the VM
processes an agent that died left running (:func:`stop_journaled_vms`).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path


def created(pid: int) -> float | None:
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def append(path: str, entry: dict) -> None:
    # A file lock, not a thread lock: copies in several processes append, and this module may be
    # pickled by value (a lock object cannot be) to a VM's process that cannot import tests/.
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(entry, default=repr) + "\n")


def journal_entries(path) -> list[dict]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def journal_calls(path, op: str | None = None) -> list:
    """The SDK calls a journal holds, as ``(op, args)``, or the ``args`` of those of ``op``."""
    calls = [(e["op"], tuple(e["args"])) for e in journal_entries(path) if "op" in e]
    return calls if op is None else [args for name, args in calls if name == op]


def kill_journaled_vm(path, name: str) -> None:
    """SIGKILL the processes the journal says VM ``name`` runs (those still the same processes)."""
    _kill_entries([e for e in journal_entries(path) if e.get("vm") == name])


def stop_journaled_vms(path) -> list[int]:
    """SIGKILL the process group of each VM process a journal names that still runs (the same
    process: its start time matches); the pids stopped. For VMs whose owner died without deleting them."""
    return _kill_entries(journal_entries(path))


def _kill_entries(entries: list[dict]) -> list[int]:
    import psutil
    stopped = []
    for entry in entries:
        if "pid" not in entry:
            continue
        try:
            same = psutil.Process(entry["pid"]).create_time() == entry["created"]
        except psutil.Error:
            continue
        if same:
            try:
                os.killpg(entry["pid"], signal.SIGKILL)
                stopped.append(entry["pid"])
            except (ProcessLookupError, PermissionError):
                pass
    return stopped
