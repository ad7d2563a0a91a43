"""The agent process of a detached pool: ``python -m batchnb.agent``.

``bnb.Pool(name, ..., detached=True)`` (:mod:`.client`) starts it in a
session of its own (the kernel's interrupt and death do not reach it) and
writes a boot message to its stdin: the pool class and the arguments the
pool was made with, pickled, and who made it (the pool's owner). The pool
class comes in the message, so the agent (a layer below the Pool) never
imports it, and it runs the very code the client runs: the agent is a
Pool made in a process of its own, driven through its methods
(:mod:`.rpc`). It inherits the creator's ``sys.path`` and Dask config, as
local nodes do, and it is started as a module, so it never imports the
creator's ``__main__`` (a script needs no ``if __name__ == "__main__":``).

Then it claims the pool's name in the registry (:mod:`.registry`), makes
the pool's certificates (:mod:`.tls`; a local pool's Dask scheduler and
workers talk TLS with them too), makes the pool, gives its creator the
role ``owner`` (:mod:`.access`), serves on ``tls://127.0.0.1``, publishes
its address, and says so (or
why it could not start) on the status pipe the creator reads. It stops
when a client closes the pool, on SIGTERM/SIGINT/SIGHUP, or when no job
has run and no client has been there for ``batchnb.agent-idle-timeout``;
it records why in the ledger (an event of kind ``pool``, state
``stopped``), closes the pool and its nodes, and removes its record.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import signal
import sys
import time

from .. import _config
from ..engine.ledger import Batch
from ..spec.validate import duration
from ..engine import ledger_roles as roles
from . import registry, tls
from .rpc import AgentHandlers

log = logging.getLogger("batchnb.agent")

STATUS_FD = "BATCHNB_AGENT_STATUS_FD"
#: Seconds the idle clock waits for the creator's first call (a loaded machine is slow to make it).
CREATOR_GRACE = 60.0
SYS_PATH = "BATCHNB_SYS_PATH"


def _report(fd: int | None, **message) -> None:
    """Tell the creator how the start went (once), then let go of the pipe."""
    if fd is None:
        return
    import cloudpickle
    try:
        data = cloudpickle.dumps(message)
    except Exception as exc:  # noqa: BLE001 - an error that does not pickle still says what it was
        from ..errors import BackendError
        data = cloudpickle.dumps({"error": BackendError(str(message.get("error") or exc))})
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError:             # the creator is gone (killed while it waited): serve anyway
        pass


def idle_timeout() -> float | None:
    return duration(_config.get("agent-idle-timeout"), "batchnb.agent-idle-timeout")


def main() -> int:
    status_fd = int(os.environ.pop(STATUS_FD)) if STATUS_FD in os.environ else None
    if SYS_PATH in os.environ:
        sys.path[:] = json.loads(os.environ.pop(SYS_PATH))
    os.environ.pop("DASK_INTERNAL_INHERIT_CONFIG", None)      # read at import; nodes get their own
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import cloudpickle
    try:
        boot = cloudpickle.loads(sys.stdin.buffer.read())
        name = boot["name"]
        record = registry.claim(name)
    except BaseException as exc:  # noqa: BLE001 - the creator raises it
        _report(status_fd, error=exc)
        return 2
    owner = boot.get("owner") or getpass.getuser()
    args, kwargs = boot["args"], dict(boot["kwargs"])
    try:
        own = tls.user_pool_files(name, registry.folder(), kwargs["security"]) if _is_security(
            kwargs.get("security")) else None
        files, owner = own or (tls.make_pool_files(name, registry.folder(), owner), owner)
    except BaseException as exc:  # noqa: BLE001 - the creator raises it
        registry.remove(name)
        _report(status_fd, error=exc)
        return 2
    if kwargs.get("backend", args[0] if args else "local") == "local" and kwargs.get("security") is None:
        kwargs["security"] = tls.cluster_security(files)       # its scheduler and workers talk TLS too
    noted = _defer_stop_signals()
    # The Dask client's periodic scheduler-info update (every 2 s) caches an identity without
    # workers; EngineHandle.workers() reads the cache right after a full fetch, and a refresh
    # landing in between shows the dispatcher no worker: every node "left", its tasks requeued,
    # and the node unusable after node-start-timeout. Nothing in the agent reads that cache.
    import dask
    dask.config.set({"distributed.client.scheduler-info-interval": "1h"})
    try:
        timeout = idle_timeout()
        pool = boot["pool_class"](name, *args, **kwargs)
        roles.grant(pool.ledger, pool.name, owner, "owner", by="batchnb (made the pool)")
    except BaseException as exc:  # noqa: BLE001 - a bad option: the creator raises the pool's own error
        registry.remove(name)
        _report(status_fd, error=exc)
        return 2
    log.info("agent: pool %s is up (pid %s, idle timeout %s)", name, os.getpid(), timeout)
    if _stopped_while_starting(pool, name, noted, status_fd):
        return 1
    try:
        asyncio.run(_serve(pool, files, record, status_fd, timeout, owner))
    finally:
        try:
            pool.close()            # a no-op when the handlers closed it
        finally:
            registry.remove(name)
    return 0


def _is_security(value) -> bool:
    from distributed.security import Security
    return isinstance(value, Security)


def _public_spec(pool) -> dict:
    from ..spec.codec import to_dict
    spec = to_dict(pool.spec)
    if callable(pool.spec.autoscale):        # a Python policy stays in the agent; clients learn that it is one
        spec.pop("autoscale", None)
        spec["autoscale_callable"] = True
    return spec


async def _serve(pool, files: dict, record: dict, status_fd: int | None, timeout: float | None,
                 owner: str) -> None:
    from distributed.core import Server
    loop = asyncio.get_running_loop()
    handlers = AgentHandlers(pool, loop, files)
    server = Server(handlers.handlers(), blocked_handlers=["dump_state", "connection_stream"])
    await server.listen("tls://127.0.0.1:0", **tls.agent_security(files).get_listen_args("scheduler"))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(handlers.shutdown(f"signal {s.name}")))
    backend = pool._engine.backend
    record.update(address=server.address, tls=files, owner=owner, scheduler=pool.client.scheduler.address,
                  dashboard=pool.client.dashboard_link, backend=pool.spec.backend, ledger=str(pool.ledger.path),
                  log=os.environ.get("BATCHNB_AGENT_LOG"), spec=_public_spec(pool),
                  can_scale=bool(backend.can_scale), can_preempt=bool(backend.can_preempt),
                  **_scheduler_access(pool))
    registry.publish(record)
    handlers.record = record
    _report(status_fd, ok=record)
    watch = asyncio.ensure_future(_watch_idle(handlers, timeout))
    try:
        await handlers.stop.wait()
    finally:
        watch.cancel()
        _record_stop(pool, handlers.stop_reason or "the agent stopped")
        registry.remove(pool.name)
        server.stop()


def _scheduler_access(pool) -> dict:
    """How another process of this machine reaches the pool's scheduler (``pool.client``): TLS
    files by path when the pool was given files, never key material (the record is a file), or why not."""
    if pool.spec.backend == "gateway":
        name = getattr(getattr(pool._engine.backend, "cluster", None), "name", "?")
        return {"scheduler_unreachable": f"the gateway's scheduler takes the gateway's credentials, which stay "
                f"in the agent; dask_gateway.Gateway(address, auth=...).connect({name!r}) reaches it"}
    if not str(pool.client.scheduler.address).startswith("tls://"):
        return {}
    tls = pool.client.security.get_tls_config_for_role("client")
    paths = {"tls_ca_file": tls.get("ca_file"), "tls_client_cert": tls.get("cert"), "tls_client_key": tls.get("key")}
    if any(v is None or "\n" in v for v in paths.values()):
        return {"scheduler_unreachable": "its scheduler talks TLS with a temporary certificate held in the "
                "agent's memory; make the pool with security=Security(tls_ca_file=..., tls_client_cert=..., "
                "tls_client_key=...) of files for pool.client to reach it from other processes"}
    return {"scheduler_security": paths}


async def _watch_idle(handlers: AgentHandlers, timeout: float | None) -> None:
    """Stop the pool once no job has run and no client has been there for ``timeout`` seconds."""
    if timeout is None:
        return
    every = max(0.05, min(1.0, timeout / 4))
    started = idle_since = time.monotonic()
    while not handlers.stop.is_set():
        await asyncio.sleep(every)      # a periodic look, not a wait for one state
        # The creator connects once it has read the agent's address: the clock starts then.
        waiting_for_creator = not handlers.greeted and time.monotonic() - started < CREATOR_GRACE
        if waiting_for_creator or handlers.connected() or await handlers._run(handlers.busy):
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= timeout:
            await handlers.shutdown(f"idle: no job ran and no client was connected for {timeout:g}s "
                                    "(batchnb.agent-idle-timeout)")
            return


def _record_stop(pool, reason: str) -> None:
    """The ledger says when and why the pool's agent stopped (``ledger.events()``, kind ``pool``)."""
    try:
        batch = Batch()
        batch.event(time.time(), "pool", state="stopped", data={"pool": pool.name, "reason": reason,
                                                               "pid": os.getpid()})
        pool.ledger.commit(batch)
        pool.ledger.audit("pool-stop", None, f"pool {pool.name}: {reason}", actor=f"agent of pool {pool.name}")
    except Exception:  # noqa: BLE001 - the pool still stops
        log.exception("agent: could not record the stop of pool %s", pool.name)


def _defer_stop_signals() -> list:
    """Until the pool is made, a stop signal is noted, not obeyed: an agent ended while its backend
    starts would leave what it made so far (an Azure scheduler VM) running, known to no one."""
    noted: list = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: noted.append(signal.Signals(signum).name))
    return noted


def _stopped_while_starting(pool, name: str, noted: list, status_fd: int | None) -> bool:
    """Close a pool that was asked to stop while it started (its nodes go with it); say so."""
    if not noted:
        return False
    from ..errors import BackendError
    reason = f"signal {noted[0]} while the pool started"
    log.info("agent: closing pool %s: %s", name, reason)
    try:
        _record_stop(pool, reason)
        pool.close()
    finally:
        registry.remove(name)
        _report(status_fd, error=BackendError(f"the agent of pool {name!r} was stopped ({reason}); "
                                              "the pool and its nodes are closed"))
    return True
