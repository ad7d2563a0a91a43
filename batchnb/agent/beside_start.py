"""The creator's side of an agent beside a remote scheduler (:mod:`.beside`): start it, keep its record.

:func:`start` checks that no agent serves beside that scheduler yet, sends
the pool's arguments and the owner's identity to the scheduler in the
plugin, waits until the agent serves (or says why it cannot), and keeps a
record of it in this machine's registry (:mod:`.registry`): the address
and the credentials the creator reached it with, in files only their owner
reads. The record has no pid (no process of this machine is the agent), so
the registry knows the agent alive while it answers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ..errors import BackendError, BatchError, SpecError
from . import registry
from .beside import OPTION, STATUS, AgentPlugin
from .link import AgentLink


def start(pool_class: type, name: str, args: tuple, kwargs: dict, timeout: float,
          started=None) -> tuple[dict, Any]:
    """Start the agent of a new pool beside its scheduler; its registry record and the credentials that reach it.

    ``started``: how, for a backend this module does not start itself (azure: :mod:`.beside_azure`)."""
    from .service import idle_timeout
    for record in registry.records():
        if record["name"].lower() == name.lower():
            raise SpecError("pool name", name, f"a detached pool of this name runs already (address "
                            f"{record['address']}); use bnb.Pool.connect({name!r}) or close it first")
    idle = idle_timeout()
    backend = kwargs.get("backend", args[0] if args else "local")
    if started is None:
        started = _start_gateway if backend == "gateway" else _start_address
    record, security, files = started(pool_class, name, args, kwargs, timeout, idle)
    return registry.keep_beside(record, **files), security


def _start_address(pool_class, name, args, kwargs, timeout, idle):
    import cloudpickle
    from distributed import Client
    from distributed.security import Security
    given = kwargs["security"]
    ca, cert, key = (_text(getattr(given, f)) for f in ("tls_ca_file", "tls_client_cert", "tls_client_key"))
    # What the pool in the scheduler's process reaches its scheduler with: the creator's certificate,
    # inline (the creator's files are not there).
    inline = Security(require_encryption=True, tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key)
    address = kwargs["address"]
    _refuse_second_agent(address, inline)
    boot = cloudpickle.dumps({"pool_class": pool_class, "name": name, "args": args,
                              "kwargs": {k: v for k, v in kwargs.items() if k != "security"}, "security": inline})
    try:
        client = Client(address, security=inline, timeout=kwargs.get("timeout", 30.0), set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise BackendError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        client.register_plugin(AgentPlugin(boot, common_name(cert), idle))
    finally:
        client.close()
    status = _wait_started(address, inline, timeout)
    record = dict(status, address=address, scheduler=address,
                  scheduler_security=None)      # filled with the files' paths by the registry
    return record, inline, {"ca": ca, "cert": cert, "key": key, "kind": "dask"}


def _start_gateway(pool_class, name, args, kwargs, timeout, idle):
    import cloudpickle
    from dask_gateway import Gateway

    from .. import spec as specs
    from ..backends.gateway import GatewayBackend, _close_gateway
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
                client.register_plugin(AgentPlugin(boot, common_name(security.tls_cert), idle))
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
    record = dict(status, address=cluster.scheduler_address)
    # The gateway's proxy takes the cluster's own certificate as the CA it trusts.
    return record, security, {"ca": security.tls_cert, "cert": security.tls_cert, "key": security.tls_key,
                              "kind": "gateway"}


def _refuse_second_agent(address: str, security) -> None:
    """One agent per scheduler: its handlers are the scheduler's, by name."""
    async def ask():
        from distributed.core import rpc
        r = rpc(address, connection_args=security.get_connection_args("client"), timeout=30)
        try:
            return await getattr(r, STATUS)()
        except Exception:
            return None
        finally:
            await r.close_rpc()
    status = registry.run_coroutine(ask)
    if isinstance(status, dict) and "ok" in status:
        raise SpecError(OPTION, True, f"the agent of pool {status['ok'].get('name')!r} runs beside the scheduler "
                        f"at {address} already (one per scheduler); bnb.Pool.connect({address!r}, security=...) "
                        "reaches it")


def _wait_started(address: str, security, timeout: float) -> dict:
    from distributed.core import rpc

    async def ask():
        r = rpc(address, connection_args=security.get_connection_args("client"))
        try:
            deadline = time.monotonic() + timeout
            while True:
                status = await getattr(r, STATUS)()
                if "starting" not in status:
                    return status
                if time.monotonic() > deadline:
                    raise BackendError(f"the agent beside the scheduler at {address} did not start within "
                                       f"{timeout:g}s (batchnb.agent-start-timeout); see the scheduler's log")
                await asyncio.sleep(0.2)      # polling another process's state over RPC
        finally:
            await r.close_rpc()
    status = registry.run_coroutine(ask)
    if "error" in status:
        from .wire import unpack_error
        raise unpack_error(status["error"]).with_traceback(None) from None
    return status["ok"]


def _text(value: str) -> str:
    """A PEM given inline or as a file's path: its text."""
    return value if "\n" in value else Path(value).read_text()


def common_name(pem: str) -> str:
    """The CN of a certificate (a PEM or its file): who its holder is to the agent."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    cert = x509.load_pem_x509_certificate(_text(pem).encode())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise BatchError("the certificate this pool is made with names no one (no CN): it would be no one's pool")
    return names[0].value


class BesideLink(AgentLink):
    """A client's link to an agent beside a remote scheduler: once the agent has stopped, the
    scheduler (which runs on) answers its operations with nothing; that is an agent gone."""

    async def _make_rpc(self):
        return _Answered(await super()._make_rpc(), self.address)


class _Answered:
    """An ``rpc`` whose calls that come back empty (no such handler any more) raise CommClosedError."""

    def __init__(self, rpc, address: str):
        self._rpc, self._address = rpc, address

    def __getattr__(self, op: str):
        method = getattr(self._rpc, op)

        async def call(**kwargs):
            from distributed.comm.core import CommClosedError
            answer = await method(**kwargs)
            if answer is None:
                raise CommClosedError(f"no agent serves beside the scheduler at {self._address} any more")
            return answer
        return call

    async def close_rpc(self) -> None:
        await self._rpc.close_rpc()
