"""A gateway pool's agent beside its scheduler: ``bnb.Pool(..., backend="gateway", agent_on_scheduler=True,
detached=True)``.

The creator makes the dask-gateway cluster and registers :class:`AgentPlugin`
on its scheduler (``Client.register_plugin``: a ``SchedulerPlugin``, sent
pickled, started in the scheduler's process). There the plugin makes the
pool (the same Pool class, on the same cluster by its name), with its ledger
and node folders in the scheduler's working folder, and serves the agent's
operations (:mod:`.rpc`) as the scheduler's own handlers (``bnb_*``). A
client calls them with Dask's RPC through the gateway's TLS proxy (the
cluster's address and credentials: ``Gateway(...).connect(name)`` gives
them to whoever the gateway lets in), so the pool needs nothing of the
machine that made it: not a process, not a file.

The cluster's credentials are one certificate that every client of it
shows: whoever the gateway lets reach the cluster is its owner here (the
gateway's own authentication is the access control).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..errors import BackendError, BatchError, SpecError
from .wire import pack_error

log = logging.getLogger("batchnb.agent")

#: The gateway backend's option that puts the agent beside the scheduler.
OPTION = "agent_on_scheduler"


def wanted(args: tuple, kwargs: dict) -> bool:
    backend = kwargs.get("backend", args[0] if args else "local")
    if kwargs.get(OPTION) in (None, False):
        return False
    if backend != "gateway":
        raise SpecError(OPTION, kwargs[OPTION], f"only a gateway pool's agent can run beside its scheduler "
                                                f"(backend {backend!r})")
    if kwargs[OPTION] is not True:
        raise SpecError(OPTION, kwargs[OPTION], "expected True or False")
    return True


class AgentPlugin(SchedulerPlugin):
    """Runs a detached pool's agent in the scheduler's process (see the module's text)."""

    name = "batchnb-agent"

    def __init__(self, boot: bytes, owner: str):
        self.boot, self.owner = boot, owner
        self.status: dict = {"starting": True}

    async def start(self, scheduler) -> None:
        scheduler.handlers["bnb_beside_status"] = self._status
        self.scheduler = scheduler
        # Making the pool blocks (its cluster's workers start): the scheduler's loop must not.
        self._starting = asyncio.ensure_future(self._start(scheduler))

    async def _status(self, comm=None, **kwargs) -> dict:
        return self.status

    async def _start(self, scheduler) -> None:
        loop = asyncio.get_running_loop()
        try:
            pool = await loop.run_in_executor(None, self._make_pool)
            from .rpc import AgentHandlers
            from .service import _public_spec
            from ..engine import ledger_roles as roles
            handlers = AgentHandlers(pool, loop)
            await handlers._run(roles.grant, pool.ledger, pool.name, self.owner, "owner",
                                by="batchnb (made the pool)")
            backend = pool._engine.backend
            handlers.record = {
                "name": pool.name, "address": None, "pid": None, "host_pid": os.getpid(), "owner": self.owner,
                "backend": pool.spec.backend, "ledger": str(pool.ledger.path), "spec": _public_spec(pool),
                "can_scale": bool(backend.can_scale), "can_preempt": bool(backend.can_preempt),
                "beside_scheduler": scheduler.address, "cluster_name": getattr(backend.cluster, "name", None),
                "scheduler_unreachable": "the pool's Dask scheduler is its gateway cluster's: "
                                         "dask_gateway.Gateway(address, auth=...).connect(cluster_name).get_client()"}
            scheduler.handlers.update(handlers.handlers())
            self.handlers = handlers
            self.status = {"ok": handlers.record}
            log.info("agent: pool %s serves beside scheduler %s (pid %s)", pool.name, scheduler.address, os.getpid())
        except BaseException as exc:  # noqa: BLE001 - the creator raises it
            log.exception("agent: the pool beside scheduler %s did not start", scheduler.address)
            self.status = {"error": pack_error(exc)}

    def _make_pool(self):
        import cloudpickle
        boot = cloudpickle.loads(self.boot)
        home = Path.cwd() / "batchnb"
        # The agent's files (its ledger, its nodes' folders) are on the scheduler's side.
        os.environ["BATCHNB_HOME"] = str(home)
        kwargs = {k: v for k, v in boot["kwargs"].items() if k != OPTION}
        kwargs.pop("cluster_options", None)         # the creator made the cluster with them
        kwargs.update(ledger=str(home / "ledger.sqlite"), cluster_name=boot["cluster_name"],
                      shutdown_on_close=kwargs.get("shutdown_on_close", boot["made"]))
        return boot["pool_class"](boot["name"], *boot["args"], **kwargs)

    async def close(self) -> None:
        handlers = getattr(self, "handlers", None)
        if handlers is not None and handlers.stop_reason is None:
            await handlers.shutdown("the scheduler stopped")


def start(pool_class: type, name: str, args: tuple, kwargs: dict, timeout: float) -> tuple[dict, Any]:
    """Make the gateway cluster, start the agent in its scheduler; its record and the credentials that reach it."""
    import cloudpickle
    from dask_gateway import Gateway

    from ..backends.gateway import GatewayBackend, _close_gateway
    from .. import spec as specs
    checked = GatewayBackend(specs.PoolSpec(name, backend="gateway", dedicated=kwargs.get("dedicated")),
                             **{k: v for k, v in kwargs.items() if k in GatewayBackend.option_names()
                                and k != OPTION})
    gateway = checked._gateway = Gateway(address=checked.address, proxy_address=checked.proxy_address,
                                         auth=checked.auth)
    try:
        options = checked._options() if checked.cluster_options else None
        if checked.cluster_name is not None:
            cluster = gateway.connect(checked.cluster_name)
        else:
            cluster = gateway.new_cluster(cluster_options=options, shutdown_on_close=False)
        security = cluster.security
        try:
            boot = cloudpickle.dumps({"pool_class": pool_class, "name": name, "args": args, "kwargs": kwargs,
                                      "cluster_name": cluster.name, "made": checked.cluster_name is None})
            client = cluster.get_client(set_as_default=False)
            try:
                client.register_plugin(AgentPlugin(boot, _cn(security)))
            finally:
                client.close()
            status = _wait_started(cluster.scheduler_address, security, timeout)
        except BaseException:
            if checked.cluster_name is None:
                cluster.shutdown()
            raise
        finally:
            cluster.close(shutdown=False)       # this process's handle only: the cluster runs on
            _close_gateway(getattr(cluster, "gateway", None))
    finally:
        _close_gateway(gateway)
    if "error" in status:
        from .wire import unpack_error
        raise unpack_error(status["error"]).with_traceback(None) from None
    record = dict(status["ok"], address=cluster.scheduler_address)
    return record, security


def _wait_started(address: str, security, timeout: float) -> dict:
    from distributed.core import rpc

    async def ask():
        r = rpc(address, connection_args=security.get_connection_args("client"))
        try:
            deadline = time.monotonic() + timeout
            while True:
                status = await r.bnb_beside_status()
                if "starting" not in status:
                    return status
                if time.monotonic() > deadline:
                    raise BackendError(f"the agent beside the scheduler at {address} did not start within "
                                       f"{timeout:g}s (batchnb.agent-start-timeout); see the scheduler's log")
                await asyncio.sleep(0.2)      # polling another process's state over RPC
        finally:
            await r.close_rpc()
    return asyncio.run(ask())


def _cn(security) -> str:
    """The CN of the cluster's certificate: who every client of the cluster is to the agent."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    pem = getattr(security, "tls_cert", None) or security.tls_client_cert
    if "\n" not in pem:
        pem = Path(pem).read_text()
    cert = x509.load_pem_x509_certificate(pem.encode())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise BatchError("the gateway cluster's certificate names no one (no CN)")
    return names[0].value
