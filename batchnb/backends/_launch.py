"""The driver's side of the node launcher (:mod:`batchnb.node.warmstart`).

A local pool starts its launcher first, as soon as its arguments are checked
(:func:`prestart`, from the backend's ``warm_up``), before it opens its ledger,
imports Dask or starts its scheduler: the launcher imports a worker's code
meanwhile, on the other core, and each node is then a fork of it rather than a
fresh interpreter importing it all again. Nothing here imports Dask: when the
driver has not loaded ``dask.config`` yet, the launcher reads the same files
and variables itself and is told only the level of its logs.

The launcher is a command in a session of its own (as the node commands
were), given the driver's ``sys.path`` and Dask config; it hears of new nodes
on its stdin and tells of their pids and exits on a pipe, read here by one
thread that calls each node's callbacks.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from ..node.warmstart import REPORT_FD, SILENCE, level_name, silence

__all__ = ["Launcher", "prestart", "take", "silence"]

log = logging.getLogger("batchnb.backends.local")

# ``python -c``: no module of the driver's is imported before the driver's sys.path is in place;
# the config is dropped from the environment once read, so nodes and their tasks do not inherit it.
_BOOT = ("import json, os, sys; sys.path[:] = json.loads(os.environ.pop('BATCHNB_SYS_PATH')); "
         "import dask; os.environ.pop('DASK_INTERNAL_INHERIT_CONFIG', None); "
         "from batchnb.node.warmstart import serve; serve()")


class Launcher:
    """Starts a local pool's node processes as forks of one warm process (started here, at once)."""

    def __init__(self, silence_logs=logging.ERROR):
        self.silence_logs = silence_logs
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._proc: subprocess.Popen | None = None
        self._closed = False
        #: set once the launcher has also imported what nodes would import after their fork
        self.warm = threading.Event()
        with self._lock:
            self._start()

    def _start(self) -> None:
        read, write = os.pipe()
        env = {**os.environ, REPORT_FD: str(write), "BATCHNB_SYS_PATH": json.dumps(sys.path)}
        dask_config = sys.modules.get("dask.config")
        if dask_config is not None:     # what the driver set, as a nanny hands it to its worker
            config = copy.deepcopy(dask_config.global_config)
            silence(config, self.silence_logs)
            env["DASK_INTERNAL_INHERIT_CONFIG"] = dask_config.serialize(config)
        elif level_name(self.silence_logs) is not None:
            # Importing Dask here would hold the launcher back by as long; nothing was set in it yet.
            env[SILENCE] = level_name(self.silence_logs)
        try:
            proc = subprocess.Popen([sys.executable, "-c", _BOOT], env=env, stdin=subprocess.PIPE,
                                    pass_fds=(write,), start_new_session=True)
        finally:
            os.close(write)
        self._proc = proc
        # request id -> (on_start, on_exit); pid -> on_exit
        self._starting: dict[int, tuple[Callable, Callable]] = {}
        self._running: dict[int, Callable] = {}
        threading.Thread(target=self._read, args=(proc, read, self._starting, self._running),
                         name="batchnb-node-launcher", daemon=True).start()

    def spawn(self, argv: list[str], env: dict, on_start: Callable[[int], None],
              on_exit: Callable[[int], None]) -> None:
        """Start a node: ``dask-spec argv`` in ``env``. ``on_start(pid)`` then ``on_exit(code)`` are
        called from the launcher's reader thread (``on_exit`` alone, code -1, if it could not start)."""
        with self._lock:
            if self._closed:
                on_exit(-1)
                return
            if self._proc.poll() is not None:       # it died (killed by hand?): a new one serves
                self._start()
            rid = next(self._ids)
            self._starting[rid] = (on_start, on_exit)
            try:
                self._proc.stdin.write(json.dumps({"id": rid, "argv": argv, "env": env}).encode() + b"\n")
                self._proc.stdin.flush()
            except OSError:
                self._starting.pop(rid, None)
                on_exit(-1)

    def _read(self, proc: subprocess.Popen, fd: int, starting: dict, running: dict) -> None:
        with open(fd, "rb", buffering=0) as report:
            buffer = b""
            while chunk := report.read(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    what, *args = line.decode().split()
                    if what == "warm":
                        self.warm.set()
                        continue
                    with self._lock:
                        if what == "started":
                            on_start, on_exit = starting.pop(int(args[0]))
                            running[int(args[1])] = on_exit
                        else:
                            on_start, on_exit = None, running.pop(int(args[0]), None)
                    if on_start is not None:
                        on_start(int(args[1]))
                    elif on_exit is not None:
                        on_exit(int(args[1]))
        proc.wait()
        # The launcher is gone (killed): its nodes lost their parent and close by themselves; end
        # them now, so that a node restarted in their place does not meet its predecessor.
        with self._lock:
            unstarted = [on_exit for _, on_exit in starting.values()]
            lost = list(running.items())
            starting.clear()
            running.clear()
        for pid, on_exit in lost:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            on_exit(-signal.SIGKILL)
        for on_exit in unstarted:
            on_exit(-1)

    def running(self) -> bool:
        with self._lock:
            return not self._closed and self._proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """End the launcher (its nodes were closed by their pool; any left close by themselves)."""
        with self._lock:
            self._closed = True
            proc = self._proc
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_spare: list[Launcher] = []
_spare_lock = threading.Lock()


def prestart(silence_logs=logging.ERROR) -> Callable[[], None]:
    """Start a launcher now, for the next local backend of this process to :func:`take`.

    Returns what ends it if no backend took it (the pool failed before its nodes started).
    """
    with _spare_lock:
        if not _spare:
            _spare.append(Launcher(silence_logs))
        launcher = _spare[-1]

    def cancel() -> None:
        with _spare_lock:
            if launcher not in _spare:
                return
            _spare.remove(launcher)
        launcher.close()
    return cancel


def take(silence_logs=logging.ERROR) -> Launcher:
    """The launcher :func:`prestart` started, when it logs at this level and still runs; else a new one."""
    with _spare_lock:
        launcher = _spare.pop() if _spare else None
    if launcher is not None and launcher.silence_logs == silence_logs and launcher.running():
        return launcher
    if launcher is not None:
        launcher.close()
    return Launcher(silence_logs)
