"""Running a command as its own process group and killing all of it.

A task's wall-clock limit must kill the command *and every process it
started*, including children that ignore SIGTERM or leave the group with
``setsid``; so we kill the group and then every descendant psutil finds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_tree(proc: subprocess.Popen, known: list[psutil.Process] | None = None) -> None:
    """SIGKILL the process, its group and all descendants (found before the kill)."""
    family = descendants(proc.pid) + list(known or ())
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for child in family:
        try:
            child.kill()
        except psutil.Error:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    psutil.wait_procs(family, timeout=5)


def run(argv, *, shell: bool, cwd: str, env: dict, stdout_path: str, stderr_path: str,
        timeout: float | None, on_start=None) -> tuple[int | None, bool]:
    """Run to completion or timeout; return ``(exit_code, timed_out)``.

    ``on_start(proc)`` lets the caller register the process so that a job's
    termination can kill it from another thread.
    """
    # Readable by their owner only: a task's output may hold what it read (a secret).
    with open(_private(stdout_path), "wb") as out, open(_private(stderr_path), "wb") as err:
        proc = subprocess.Popen(argv, shell=shell, executable="/bin/sh" if shell else None, cwd=cwd, env=env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    if on_start is not None:
        on_start(proc)
    deadline = None if timeout is None else time.monotonic() + timeout
    watched: list[psutil.Process] = []
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            kill_tree(proc, watched)
            return None, True
        try:
            # Short waits so that descendants are seen before they could outlive the parent.
            return proc.wait(timeout=min(left, 0.5) if left is not None else 0.5), False
        except subprocess.TimeoutExpired:
            if deadline is not None:
                seen = {p.pid for p in watched}
                watched.extend(p for p in descendants(proc.pid) if p.pid not in seen)


def _private(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
