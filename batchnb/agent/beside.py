"""A detached pool's agent beside a remote Dask scheduler: ``bnb.Pool(..., backend="gateway"|"address"|"azure",
agent_on_scheduler=True, detached=True)``.

The creator (:mod:`.beside_start`) registers :class:`AgentPlugin` on the
scheduler (``Client.register_plugin``: a ``SchedulerPlugin``, sent pickled,
started in the scheduler's process; the scheduler's Python needs batchnb).
There the plugin makes the pool (the same Pool class, driving that same
scheduler), with its ledger and node folders in ``batchnb/`` of the
scheduler's working folder (on an Azure scheduler VM, in
``<bootstrap_dir>/agent-<cluster>/``), and serves the agent's operations (:mod:`.rpc`)
as the scheduler's own handlers (``bnb_*``), on the scheduler's own TLS
listener. Nothing of the pool runs on the creator's machine: no process, no
ledger; the creator's batchnb home keeps only a record of the pool (its
address and the creator's credentials, :mod:`.registry`), so that
``bnb.pools()`` lists it and ``bnb.Pool.connect(name)`` reaches it.

- **gateway**: the creator makes the cluster; clients reach the scheduler
  through the gateway's TLS proxy with the cluster's credentials, one
  certificate every client of the cluster shows: whoever the gateway lets
  reach the cluster is the pool's owner (the gateway's own authentication is
  the access control).
- **address**: the scheduler is the site's, and must speak TLS: each caller
  is the CN of its own certificate (signed by the site's CA), so roles work
  as for a local agent (the creator's CN is the owner; ``pool.grant``). The
  pool reaches its own scheduler with the creator's certificate, which
  travels inline in the boot message (never as paths to the creator's
  files). Closing the pool leaves the scheduler running: it is the site's.
- **azure** (:mod:`.beside_azure`, :mod:`batchnb.backends._azure_adopt`):
  the creator makes the scheduler VM only, with its own Azure credentials,
  asking for a managed identity for it and giving that identity Contributor
  on the pool's resource group; the agent's pool adopts the scheduler it runs
  in (no second scheduler VM) and makes and deletes the node VMs with the
  VM's identity. As for gateway, every client shows the cluster's one
  certificate (its holder is the pool's owner). When the agent stops, after
  its nodes are deleted and the ledger says why, it deletes its own VM, as
  its last request: the ledger, on that VM's disk, goes with it.

Neither has a CA key, so ``pool.credentials`` cannot mint certificates there
(it says so). The agent stops itself after ``batchnb.agent-idle-timeout``
(the creator's) with no job running and no client, as a local agent does
(:func:`.service._watch_idle`); when it stops, for whatever reason, the
ledger says why (kind ``pool``, state ``stopped``), the pool is closed (a
gateway cluster goes too when ``shutdown_on_close``) and the ``bnb_*``
handlers are removed from the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from distributed.diagnostics.plugin import SchedulerPlugin

from ..errors import BatchError, SpecError
from .rpc import AgentHandlers
from .wire import pack_error

log = logging.getLogger("batchnb.agent")

#: The option that puts the agent beside the scheduler.
OPTION = "agent_on_scheduler"
#: Backends whose scheduler can hold the agent.
BACKENDS = ("gateway", "address", "azure")
#: The handler that says how the agent's start went; the other handlers come once it serves.
STATUS = "bnb_beside_status"


def wanted(args: tuple, kwargs: dict) -> bool:
    """Whether ``bnb.Pool(*args, **kwargs)`` asks for the agent beside its scheduler (and can have it)."""
    backend = kwargs.get("backend", args[0] if args else "local")
    if kwargs.get(OPTION) in (None, False):
        return False
    if backend not in BACKENDS:
        raise SpecError(OPTION, kwargs[OPTION], f"only a gateway or an address pool's agent, or an azure pool's, can "
                                                f"run beside its scheduler (backend {backend!r})")
    if kwargs[OPTION] is not True:
        raise SpecError(OPTION, kwargs[OPTION], "expected True or False")
    if backend == "address":
        _check_tls(kwargs.get("address"), kwargs.get("security"))
    return True


def _check_tls(address, security) -> None:
    from distributed.security import Security
    if not isinstance(address, str) or not address.startswith("tls://"):
        raise SpecError(OPTION, True, f"needs the scheduler's TLS (address {address!r} is not tls://...): the agent "
                        "knows a caller by the CN of the certificate it shows, so over plain tcp it could not tell "
                        "callers apart and anyone who reaches the scheduler could use or close the pool")
    missing = [f for f in ("tls_ca_file", "tls_client_cert", "tls_client_key")
               if not getattr(security, f, None)] if isinstance(security, Security) else ["security"]
    if missing:
        raise SpecError("security", type(security).__name__ if security is not None else None,
                        f"an agent beside the scheduler needs distributed.Security(tls_ca_file=..., "
                        f"tls_client_cert=..., tls_client_key=...): the site's CA and your certificate, whose CN "
                        f"is the pool's owner (missing: {', '.join(missing)})")


class BesideHandlers(AgentHandlers):
    """The agent's operations in a scheduler's process: what differs from a local agent's."""

    async def shutdown(self, reason: str) -> None:
        if self.stop_reason is None:
            # Recorded before the pool closes: a gateway cluster that goes with the pool takes
            # this process (and anything still to be written) with it.
            from .service import _record_stop
            await self._run(_record_stop, self.pool, reason)
        await super().shutdown(reason)

    async def issue_credentials(self, client: str, caller: str, identity: str) -> dict:
        where = self.record.get("beside_scheduler")
        how = ("a gateway cluster's clients all show the cluster's certificate (the gateway lets them in)"
               if self.pool.spec.backend == "gateway" else
               "its clients all show the cluster's certificate, which its creator's record holds"
               if self.pool.spec.backend == "azure" else
               f"give {identity!r} a certificate the site's CA signed, with that CN, and a role (pool.grant)")
        raise BatchError(f"pool {self.pool.name!r} runs beside the scheduler at {where}: its agent holds no CA key, "
                         f"so it cannot make credentials for {identity!r}; {how}")


class AgentPlugin(SchedulerPlugin):
    """Runs a detached pool's agent in the scheduler's process (see the module's text)."""

    name = "batchnb-agent"

    def __init__(self, boot: bytes, owner: str, idle_timeout: float | None = None):
        self.boot, self.owner, self.idle_timeout = boot, owner, idle_timeout
        self.status: dict = {"starting": True}

    async def start(self, scheduler) -> None:
        scheduler.handlers[STATUS] = self._status
        self.scheduler = scheduler
        # Making the pool blocks (its cluster's workers start): the scheduler's loop must not.
        self._starting = asyncio.ensure_future(self._start(scheduler))

    async def _status(self, comm=None, **kwargs) -> dict:
        return self.status

    async def _start(self, scheduler) -> None:
        loop = asyncio.get_running_loop()
        try:
            pool = await loop.run_in_executor(None, self._make_pool, scheduler.address)
            from ..engine import ledger_roles as roles
            from .service import _public_spec
            handlers = BesideHandlers(pool, loop)
            await handlers._run(roles.grant, pool.ledger, pool.name, self.owner, "owner",
                                by="batchnb (made the pool)")
            backend = pool._engine.backend
            gateway = pool.spec.backend == "gateway"
            handlers.record = {
                "name": pool.name, "address": None if gateway else scheduler.address, "pid": None,
                "host_pid": os.getpid(), "owner": self.owner, "backend": pool.spec.backend,
                "ledger": str(pool.ledger.path), "spec": _public_spec(pool), "scheduler": scheduler.address,
                "can_scale": bool(backend.can_scale), "can_preempt": bool(backend.can_preempt),
                "beside_scheduler": scheduler.address, "cluster_name": getattr(getattr(backend, "cluster", None),
                                                                               "name", None),
                "idle_timeout": self.idle_timeout,
                "scheduler_unreachable": "the pool's Dask scheduler is its gateway cluster's: dask_gateway."
                                         "Gateway(address, auth=...).connect(cluster_name).get_client()" if gateway
                else "the pool's Dask scheduler is the site's: distributed.Client(address, security=...) with "
                     "your own certificate"}
            scheduler.handlers.update(handlers.handlers())
            self.handlers = handlers
            self.status = {"ok": handlers.record}
            self._serving = asyncio.ensure_future(self._serve(scheduler, handlers))
            log.info("agent: pool %s serves beside scheduler %s (pid %s, idle timeout %s)", pool.name,
                     scheduler.address, os.getpid(), self.idle_timeout)
        except BaseException as exc:
            log.exception("agent: the pool beside scheduler %s did not start", scheduler.address)
            self.status = {"error": pack_error(exc)}

    def _make_pool(self, address: str):
        import cloudpickle
        boot = cloudpickle.loads(self.boot)
        if isinstance(boot["kwargs"], bytes):   # azure: pickled as given, before the creator made any VM
            boot["kwargs"] = cloudpickle.loads(boot["kwargs"])
        home = Path.cwd() / "batchnb"
        if boot.get("adopt") is not None:
            # A VM's cloud-init starts its scheduler in /: the agent's files go beside the VM's batchnb.
            from ..backends._azure_bootstrap import BOOTSTRAP_DIR
            home = Path(boot["kwargs"].get("bootstrap_dir", BOOTSTRAP_DIR)) / f"agent-{boot['adopt']['uuid']}"
        # The agent's files (its ledger, its nodes' folders) are on the scheduler's side.
        os.environ["BATCHNB_HOME"] = str(home)
        import dask
        # As in a local agent (service.main): the Dask client's periodic refresh of its scheduler's
        # identity can show the dispatcher no worker between two reads.
        dask.config.set({"distributed.client.scheduler-info-interval": "1h"})
        kwargs = {k: v for k, v in boot["kwargs"].items() if k != OPTION}
        kwargs["ledger"] = str(home / "ledger.sqlite")
        if boot.get("adopt") is not None:               # azure: the creator made this scheduler's VM
            kwargs["adopt_scheduler"] = boot["adopt"]
        elif boot.get("cluster_name") is not None:      # gateway: the creator made the cluster
            kwargs.pop("cluster_options", None)
            kwargs.update(cluster_name=boot["cluster_name"],
                          shutdown_on_close=kwargs.get("shutdown_on_close", boot["made"]))
        else:                                           # address: this scheduler, as it knows itself
            kwargs.update(address=address, security=boot["security"])
        return boot["pool_class"](boot["name"], *boot["args"], **kwargs)

    async def _serve(self, scheduler, handlers: BesideHandlers) -> None:
        from .service import _watch_idle
        watch = asyncio.ensure_future(_watch_idle(handlers, self.idle_timeout))
        try:
            await handlers.stop.wait()
        finally:
            watch.cancel()
            self._leave(scheduler, handlers)
            leave = getattr(handlers.pool._engine.backend, "leave_scheduler", None)
            if leave is not None:       # azure: the agent's own VM goes, last
                try:
                    await asyncio.get_running_loop().run_in_executor(None, leave)
                except Exception:
                    log.exception("agent: could not delete the scheduler VM of pool %s", handlers.pool.name)

    def _leave(self, scheduler, handlers: BesideHandlers) -> None:
        """The scheduler goes on without the agent: its handlers and this plugin are removed."""
        for op in [op for op in scheduler.handlers if op.startswith("bnb_")]:
            del scheduler.handlers[op]
        if scheduler.plugins.get(self.name) is self:
            del scheduler.plugins[self.name]
        handlers._executor.shutdown(wait=False)
        log.info("agent: pool %s stopped beside scheduler %s: %s", handlers.pool.name, scheduler.address,
                 handlers.stop_reason)

    async def close(self) -> None:
        handlers = getattr(self, "handlers", None)
        if handlers is not None and handlers.stop_reason is None:
            await handlers.shutdown("the scheduler stopped")
