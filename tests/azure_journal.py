"""The journal of the Azure stand-in (tests/azure_standin.py): what a copy of it did in another process.

A detached pool's agent gets its own copy of the stand-in SDK and VM host (pickled in its boot
message); given a journal file, that copy appends every SDK call and every VM process it starts,
one JSON object a line. A test reads the calls (:func:`journal_calls`) and stops, by pid, the VM
processes an agent that died left running (:func:`stop_journaled_vms`).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path


def created(pid: int) -> float | None:
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


_journal_lock = threading.Lock()


def append(path: str, entry: dict) -> None:
    with _journal_lock, open(path, "a") as fh:
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


def stop_journaled_vms(path) -> list[int]:
    """SIGKILL the process group of each VM process a journal names that still runs (the same
    process: its start time matches); the pids stopped. For VMs whose owner died without deleting them."""
    import psutil
    stopped = []
    for entry in journal_entries(path):
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
