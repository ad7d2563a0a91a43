"""Nodes on this machine: a ``SpecCluster`` with one worker process per node.

Each node is a worker process named by its node id, with as many threads as
the pool's task slots and a ``slots`` resource, so Dask itself also refuses to
run more than a node's slots. It is started as a command in a session of its
own (:mod:`.localproc`): no ``__main__`` guard is needed in scripts, an
interrupt of the driver does not reach it, and it closes when its driver is
gone. Preemption kills the worker process with SIGKILL — as sudden as a spot
eviction — and the node comes back later under the same id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from ..errors import BackendError
from .base import SpecClusterBackend


log = logging.getLogger("batchnb.backends.local")


class LocalBackend(SpecClusterBackend):
    """The embedded default: ``bnb.Pool("local")``.

    Each node is a worker process named by its node id, with a thread and a
    ``slots`` resource per task slot:

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1, spot=1, task_slots_per_node=2) as pool:
    ...     workers = pool.client.scheduler_info()["workers"].values()
    ...     print(sorted((w["name"], w["nthreads"], w["resources"]) for w in workers))
    ...     print([(n.id, n.group, n.state, n.slots) for n in pool.nodes()])
    [('dedicated-0', 2, {'slots': 2}), ('spot-0', 2, {'slots': 2})]
    [('dedicated-0', 'dedicated', 'idle', 2), ('spot-0', 'spot', 'idle', 2)]
    """

    name = "local"
    can_scale = True
    can_preempt = True

    def __init__(self, spec, *, memory_limit="auto", silence_logs=logging.ERROR, start_timeout: float = 60.0,
                 security=None, **options):
        super().__init__(spec, **options)
        if options:
            raise BackendError(f"the local backend does not take option(s) {sorted(options)}")
        # security: a distributed.Security (True: a temporary one) makes the scheduler and the
        # workers talk TLS; a detached pool's agent passes its pool's own (batchnb.agent.tls).
        self.security = _security(security)
        self.memory_limit = memory_limit
        self.silence_logs = silence_logs
        self.start_timeout = start_timeout
        self._launcher = None

    @classmethod
    def warm_up(cls, spec, options: dict):
        # The launcher imports the nodes' code on another core while this one opens the ledger,
        # imports Dask and starts the scheduler.
        from ._launch import prestart
        return prestart(options.get("silence_logs", logging.ERROR))

    def start(self):
        from ._launch import take
        self._launcher = take(self.silence_logs)
        from distributed import Client, Scheduler, SpecCluster
        self.cluster = SpecCluster(
            scheduler={"cls": Scheduler, "options": {
                "host": "127.0.0.1", "protocol": "tls://" if self.security else "tcp://", "dashboard": True,
                "dashboard_address": ":0", **({"security": self.security} if self.security else {})}},
            workers={}, silence_logs=self.silence_logs, name="batchnb-local", security=self.security)
        client = Client(self.cluster, security=self.security, set_as_default=False)
        initial = {"dedicated": self.spec.dedicated if self.spec.dedicated is not None else (
            0 if self.spec.autoscale is not None else os.cpu_count() or 1), "spot": self.spec.spot}
        if self.spec.autoscale is not None:
            initial = {"dedicated": self.spec.dedicated or 0, "spot": self.spec.spot}
        for group, count in initial.items():
            for _ in range(count):
                self._add(group)
        try:
            booting = asyncio.run_coroutine_threadsafe(_correct(self.cluster), self.cluster.loop.asyncio_loop)
            self.while_nodes_start()
            booting.result()
        except Exception as exc:
            client.close()
            self.cluster.close()
            self._launcher.close()
            raise BackendError(f"the local pool could not start its worker processes ({exc})") from None
        return client

    def _worker_spec(self, group: str, node_id: str) -> dict:
        from .localproc import NodeProcess
        slots = self.spec.task_slots_per_node
        worker = {"nthreads": slots, "resources": {"slots": slots}, "memory_limit": self.memory_limit,
                  "host": "127.0.0.1", "dashboard": False, "death_timeout": self.start_timeout}
        return {"cls": NodeProcess, "options": {"launcher": self._launcher,
            "worker": worker, "scheduler_obj": self.cluster.scheduler, "silence_logs": self.silence_logs,
            "start_timeout": self.start_timeout, "security": self.security}}

    def preempt(self, node_id: str) -> None:
        with self._lock:
            node = self.cluster.workers.get(node_id)
            if node_id not in self._nodes:
                raise BackendError(f"node {node_id!r} is not in this pool")
            if self._nodes[node_id] not in self.preemptible_groups:
                raise BackendError(f"node {node_id!r} is a {self._nodes[node_id]} node; only spot nodes are "
                                   "preempted (Azure evicts spot VMs only)")
            # The spec goes first so that the node is not restarted.
            self.cluster.worker_spec.pop(node_id, None)
        _kill_worker_process(node)
        self._apply()

    def restore(self, node_id: str) -> None:
        with self._lock:
            group = self._nodes.get(node_id)
        if group is None:
            return  # scaled away meanwhile
        self.cluster.loop.add_callback(self._restore_on_loop, node_id, group)

    async def _restore_on_loop(self, node_id: str, group: str) -> None:
        from distributed.core import Status
        # A worker that left by itself (an eviction notice closes it gracefully) is still
        # listed by the cluster, which would then never start it again: drop it first. It may
        # still be closing (so only the scheduler tells that it left).
        stale = self.cluster.workers.get(node_id)
        if stale is not None and (not getattr(stale, "joined", True) or getattr(stale, "status", None) in (
                Status.closing_gracefully, Status.closing, Status.closed, Status.failed)):
            self.cluster.workers.pop(node_id, None)
            asyncio.ensure_future(stale.close())
        self._add(group, node_id)
        await self.cluster._correct_state()

    def wait_gone(self, node_id: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while node_id in self.cluster.workers and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        if self.cluster is None:
            return
        try:
            self.cluster.close(timeout=10)
        except (TimeoutError, asyncio.TimeoutError):
            # A worker thread stuck in a Python task (it cannot be interrupted) or a scheduler
            # too busy to answer holds the close: end the worker processes, as Azure ends VMs.
            log.warning("batchnb: local workers did not close within 10 s; killing them")
            for node in list(self.cluster.workers.values()):
                _kill_worker_process(node)
            try:
                self.cluster.close(timeout=10)
            except (TimeoutError, asyncio.TimeoutError):
                log.warning("batchnb: the local cluster did not close cleanly")
        if self._launcher is not None:     # after its nodes: it ends with its input, they do not
            self._launcher.close()


def _security(security):
    if security is None or security is False:
        return None
    from distributed.security import Security
    if security is True:
        return Security.temporary()
    if not isinstance(security, Security):
        from ..errors import SpecError
        raise SpecError("security", type(security).__name__, "expected a distributed.security.Security, True "
                                                             "(temporary TLS certificates) or None (plain TCP)")
    return security


async def _correct(cluster) -> None:
    await cluster._correct_state()


def _kill_worker_process(node) -> None:
    """SIGKILL a node's worker process (as sudden as a spot eviction); it is not restarted."""
    kill = getattr(node, "kill", None)
    if kill is not None:
        kill()
        return
    pid = getattr(getattr(node, "process", None), "pid", None)     # a nanny's worker
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
