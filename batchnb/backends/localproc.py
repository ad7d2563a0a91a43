"""One local node: a Dask worker started as a command, in a session of its own.

``LocalCluster``'s nannies start workers by multiprocessing spawn, which
re-imports the user's main module (a script then needs an
``if __name__ == "__main__":`` guard) and leaves them in the driver's process
group, where Jupyter's interrupt (SIGINT to the kernel's group) kills them.
So, as dask's ``SSHCluster`` does on remote hosts, each node here is
``distributed.cli.dask_spec`` in a session of its own, given the driver's
``sys.path`` and Dask config (what spawn gave it): a fork of the pool's node
launcher (:mod:`._launch`), which imported the worker's code once, while the
driver started its scheduler, instead of every node importing it again.

The driver's side also does what a nanny did: it restarts a worker that died
(a task that crashed it, the out-of-memory killer), and kills what is left of
a dead worker's tasks. The node's side (:mod:`batchnb.node.reaper`, its
preload) closes the node when its driver is gone.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid

import dask
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface

from ..node.reaper import DRIVER_PID, NODE_MARK, kill_marked
from ._launch import Launcher, silence as _silence

log = logging.getLogger("batchnb.backends.local")

_PRELOAD = "batchnb.node.reaper"


class _Proc:
    """A node's process, forked by the launcher: its pid once the launcher told it."""

    pid: int | None = None


class _Run:
    """One started process of a node (a restart makes another)."""

    def __init__(self, proc: _Proc, mark: str):
        self.proc, self.mark, self.started = proc, mark, time.monotonic()
        self.returncode: int | None = None
        self.done = threading.Event()   # set when the launcher tells of its exit


class NodeProcess(ProcessInterface):
    """A ``SpecCluster`` worker entry: one ``distributed.Worker`` process named ``name``.

    ``worker`` holds the worker's options (JSON: they travel on the command line);
    ``scheduler_obj`` is the in-process scheduler, watched for the worker's arrival.
    """

    def __init__(self, scheduler: str, name: str, *, worker: dict, scheduler_obj, silence_logs=logging.ERROR,
                 start_timeout: float = 60.0, close_timeout: float = 5.0, security=None,
                 launcher: Launcher | None = None):
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler_address, self.name = scheduler, name
        self.worker_options = worker
        self.silence_logs = silence_logs
        self.start_timeout, self.close_timeout = start_timeout, close_timeout
        self.security = security
        self._scheduler = scheduler_obj
        self._launcher = launcher if launcher is not None else _default_launcher(silence_logs)
        self._run: _Run | None = None
        self._closing = False
        self._loop = None

    @property
    def process(self) -> _Proc | None:
        return self._run.proc if self._run is not None else None

    def _environment(self, mark: str) -> dict:
        config = copy.deepcopy(dask.config.global_config)      # what a nanny hands its worker
        _silence(config, self.silence_logs)
        if self.security is not None:       # the worker's Security() reads it (a Security does not fit in JSON)
            _tls_config(config, self.security)
        return {**os.environ, NODE_MARK: mark, DRIVER_PID: str(os.getpid()),
                "BATCHNB_SYS_PATH": json.dumps(sys.path),
                "DASK_INTERNAL_INHERIT_CONFIG": dask.config.serialize(config)}

    async def _spawn(self) -> _Run:
        preload = list(dask.config.get("distributed.worker.preload", None) or [])
        opts = {**self.worker_options, "name": self.name, "preload": [*preload, _PRELOAD]}
        spec = json.dumps({"cls": "distributed.Worker", "opts": opts})
        mark = f"{self.name}-{uuid.uuid4().hex}"
        run = self._run = _Run(_Proc(), mark)
        loop = self._loop
        started = loop.create_future()

        def on_start(pid: int) -> None:
            run.proc.pid = pid
            loop.call_soon_threadsafe(lambda: started.done() or started.set_result(pid))

        def on_exit(code: int) -> None:
            run.returncode = code
            run.done.set()
            try:
                loop.call_soon_threadsafe(lambda: started.done() or started.set_result(None))
                loop.call_soon_threadsafe(self._exited, run)
            except RuntimeError:    # the driver's loop is closed: nothing left to restart
                pass
        self._launcher.spawn([self.scheduler_address, "--spec", spec], self._environment(mark), on_start, on_exit)
        await started
        return run

    @property
    def joined(self) -> bool:
        """Whether the scheduler lists this node's current worker process (one that left, e.g.
        after an eviction notice, may still be closing, which its status does not tell)."""
        run = self._run
        return run is not None and run.proc.pid is not None and any(
            ws.name == self.name and ws.pid == run.proc.pid for ws in self._scheduler.workers.values())

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        run = await self._spawn()
        deadline = time.monotonic() + self.start_timeout
        while not self.joined:
            if run.done.is_set() or time.monotonic() > deadline:
                what = (f"exited with code {run.returncode}" if run.done.is_set()
                        else f"did not join within {self.start_timeout}s")
                self._closing = True
                await self._end(run)
                raise RuntimeError(f"node {self.name}: its worker process {what} (its log is on the "
                                   "driver's stderr)")
            await asyncio.sleep(0.02)
        await super().start()

    def _wanted(self) -> bool:
        ref = getattr(self, "_cluster", None)         # set by the SpecCluster once started
        cluster = ref() if ref is not None else None
        return (cluster is not None and cluster.status == Status.running
                and cluster.workers.get(self.name) is self and self.name in cluster.worker_spec)

    def _exited(self, run: _Run) -> None:
        if run is not self._run or self._closing:
            return
        if run.returncode == 0:
            # It closed by itself (an eviction notice): it stays gone until the backend
            # restores it, as a nanny's worker would.
            self.status = Status.closed
            return
        asyncio.ensure_future(self._restart(run))

    async def _restart(self, run: _Run) -> None:
        """What a nanny does for a worker that died: start it again, under the same name."""
        log.warning("batchnb: node %s's worker process died (code %s); restarting it", self.name, run.returncode)
        # Its tasks' processes may live on in sessions of their own, beside the requeued copies.
        await asyncio.get_running_loop().run_in_executor(None, kill_marked, run.mark)
        await asyncio.sleep(max(0.0, run.started + 1.0 - time.monotonic()))   # no tight crash loop
        if self._closing or run is not self._run or not self._wanted():
            return
        await self._spawn()

    def kill(self) -> None:
        """SIGKILL the worker now, as sudden as a spot eviction; it is not restarted."""
        self._closing = True
        self.status = Status.closing
        run = self._run
        if run is not None and not run.done.is_set() and run.proc.pid is not None:
            _signal_group(run.proc.pid, signal.SIGKILL)

    async def _end(self, run: _Run) -> None:
        """Ask the process to close (SIGTERM: the worker closes, its reaper kills its tasks);
        SIGKILL it after ``close_timeout``; then kill what is left of its tasks."""
        if not run.done.is_set():
            _signal_group(run.proc.pid, signal.SIGTERM)
            await _wait_event(run.done, self.close_timeout)
        if not run.done.is_set():
            _signal_group(run.proc.pid, signal.SIGKILL)
            await _wait_event(run.done, 10.0)
        # Even after a clean close: a task process that started while the worker closed carries
        # the mark and no longer has a worker to end it.
        await asyncio.get_running_loop().run_in_executor(None, kill_marked, run.mark)

    async def close(self) -> None:
        self._closing = True
        if self._run is not None:
            await self._end(self._run)
        await super().close()


_default: list[Launcher] = []


def _default_launcher(silence_logs) -> Launcher:
    """The launcher of nodes made outside a local backend (which passes its own)."""
    if not _default:
        _default.append(Launcher(silence_logs))
    return _default[0]


def _signal_group(pid: int | None, sig: int) -> None:
    # The worker leads its own session and group; its task processes have sessions of their own.
    if pid is None:     # the launcher has not forked it yet
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _wait_event(event: threading.Event, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _tls_config(config: dict, security) -> None:
    """Put ``security`` in a worker's Dask config: its comms, and a ``get_client()`` in its tasks, talk TLS."""
    comm = config.setdefault("distributed", {}).setdefault("comm", {})
    comm["require-encryption"] = True
    tls = comm.setdefault("tls", {})
    tls["ca-file"] = security.tls_ca_file
    for role in ("worker", "client"):
        tls[role] = {"cert": getattr(security, f"tls_{role}_cert"), "key": getattr(security, f"tls_{role}_key")}
