"""The notebook's side of a detached pool: ``bnb.Pool(..., detached=True)`` and ``bnb.Pool.connect``.

The object a user holds is a ``bnb.Pool`` (of a subclass made here from the
Pool class it is given, so this module, a layer below the Pool, never
imports it) whose engine is an :class:`~.proxy.EngineProxy`: ``pool.job``,
``job.add_task``, ``job.submit``/``map``, ``job.wait()``, ``await job``,
``job.tasks()``, the views and ``pool.cost()`` work as in-kernel, while the
work happens in the agent (:mod:`.service`). The agent's events feed this
object's own event bus, so live views and progress bars update as they do
in-kernel. Python functions defined in a notebook or a script's
``__main__`` travel by value (cloudpickle), as they do to in-kernel nodes.

``pool.disconnect()`` leaves the pool running; so does the end of the
process (a killed kernel, a script that returns); ``pool.close()`` stops it.
"""

from __future__ import annotations

import getpass
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _config
from .. import spec as specs
from ..engine.events import EventBus
from ..engine.ledger import Ledger
from ..errors import BackendError, BatchError, SpecError
from ..spec.validate import task_id
from . import registry
from .access import client_security
from .link import AgentLink
from .proxy import EngineProxy
from .reads import LedgerProxy

if TYPE_CHECKING:
    import batchnb

_classes: dict[type, type] = {}
#: Backends whose pool an agent on this machine can make: for slurm the agent holds the Dask
#: scheduler (as a driver would, on the login node); for gateway, address and azure the scheduler
#: stays where it is (azure: its VM) and the agent drives it from here, azure's making and deleting
#: the VMs with the pool's credentials, so this machine must stay up for the jobs to go on (with
#: agent_on_scheduler=True the agent runs beside the scheduler instead: .beside).
DETACHABLE = ("local", "slurm", "gateway", "address", "azure")


class DetachedPool:
    """The methods a detached pool's client has of its own (mixed in before the Pool's)."""

    _agent: AgentLink | None = None
    _pool_class: type

    def __init__(self, name: str = "local", *args: Any, detached: bool = True, **kwargs: Any) -> None:
        from . import beside
        if beside.wanted(args, kwargs):         # the agent runs in the remote scheduler's process
            from .beside_start import start
            backend = kwargs.get("backend", args[0] if args else "local")
            started = None
            if backend == "azure":              # on the scheduler VM this process makes first
                from .beside_azure import start_azure as started
            record, security = start(self._pool_class, task_id(name, "pool name"), args, kwargs,
                                     _start_wait(backend, kwargs), started)
            attach(self, record, security, None)
            return
        record, process = start_agent(self._pool_class, name, args, kwargs)
        attach(self, record, None, process)

    @property
    def client(self):
        """A ``distributed.Client`` of the agent's scheduler, for plain Dask work beside batchnb
        (made on first use: a CLI that only submits never pays for it)."""
        made = self.__dict__.get("_dask_client")
        if made is None:
            from distributed import Client
            why = self._record.get("scheduler_unreachable")
            if why:
                raise BackendError(f"pool {self.name!r}: no Dask client from here: {why}")
            security = self._record.get("scheduler_security")
            if security:
                from distributed.security import Security
                security = Security(require_encryption=True, **security)
            made = self.__dict__["_dask_client"] = Client(self._record["scheduler"], security=security,
                                                          set_as_default=False)
        return made

    @property
    def address(self) -> str:
        """The agent's address (``bnb.Pool.connect`` takes it, as it takes the pool's name)."""
        return self._record["address"]

    def nodes(self):
        return self._pool_call("nodes")

    def preempt(self, node_id: str) -> None:
        self._pool_call("preempt", node_id)

    def resize(self, dedicated: int | None = None, spot: int | None = None) -> None:
        self._pool_call("resize", dedicated=dedicated, spot=spot)

    def _pool_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import cloudpickle
        self._check_open()
        return cloudpickle.loads(self._agent.call("pool_call", method=method,
                                                  args=cloudpickle.dumps((args, kwargs))))

    def _check_open(self) -> None:
        if self._engine.closed:
            raise SpecError("pool", self.name, f"this client is {self._ended}; bnb.Pool.connect({self.name!r}) "
                            "reaches the pool if it still runs (bnb.pools() lists them)")

    def disconnect(self) -> None:
        """Leave the pool and its jobs running in their agent; this object is done with.

        ``bnb.Pool.connect(name)`` reaches it again, from any process of this machine."""
        self._let_go("disconnected")

    def close(self) -> None:
        """Stop the pool: its jobs stop being dispatched, its nodes and its agent end."""
        if self._engine.closed:
            return
        link = self._agent
        if link.lost is None:
            try:
                link.call("close_pool")
            except BackendError as exc:
                if not getattr(exc, "unreachable", False):
                    raise
        self._let_go("closed", say_bye=False)
        if not link.wait_agent_gone(60):
            raise BackendError(f"the agent of pool {self.name!r} (pid {link.pid}) did not end within 60 s; "
                               f"its log: {self._record.get('log')}")
        if self._record.get("beside_scheduler"):    # no process of this machine removes its record
            registry.forget(self._record)

    def _let_go(self, how: str, say_bye: bool = True) -> None:
        if self._engine.closed:
            return
        self._engine.closed = True
        self._ended = how
        self._engine.dispatcher.wake_all()          # waits in other threads see the end at once
        self._agent.close(say_bye=say_bye)
        made = self.__dict__.pop("_dask_client", None)
        if made is not None:
            try:
                made.close(timeout=10)
            except Exception:  # noqa: BLE001 - the scheduler went with its agent
                pass
        self.bus.close()

    def __repr__(self) -> str:
        if self._engine.closed:
            return f"<batchnb.Pool {self.name!r} detached, {self._ended}>"
        where = "beside its scheduler" if self._record.get("beside_scheduler") else f"pid {self._record.get('pid')}"
        return f"<batchnb.Pool {self.name!r} backend={self.spec.backend!r} detached: agent {where} at {self.address}>"


def client_class(pool_class: type) -> type:
    """The class of a detached pool's client: a ``pool_class`` whose engine runs in an agent."""
    made = _classes.get(pool_class)
    if made is None:
        made = _classes[pool_class] = type(pool_class.__name__, (DetachedPool, pool_class),
                                           {"__module__": pool_class.__module__, "__doc__": pool_class.__doc__,
                                            "__qualname__": pool_class.__qualname__, "_pool_class": pool_class})
    return made


def connect(pool_class: type, name_or_address: str, security: Any = None) -> batchnb.Pool:
    """A client of the running detached pool of this name (or agent address).

    ``bnb.pools()`` lists those of this machine, which their owner reaches
    with the credentials beside their records. ``security``: another
    identity's credentials (``pool.credentials(identity)`` made them: the
    folder, or a ``distributed.Security``), to reach a pool by its address.
    A name no agent serves is a :class:`~batchnb.SpecError`."""
    security = client_security(security)
    try:
        record = registry.find(name_or_address)
    except SpecError:
        if security is None or not str(name_or_address).startswith(("tls://", "gateway://")):
            raise
        record = None
    pool = object.__new__(client_class(pool_class))
    if record is None:      # not this user's pool: the agent says what it is
        from .beside_start import BesideLink     # what answers there may be a scheduler whose agent stopped
        link = BesideLink({"name": name_or_address, "address": name_or_address}, security)
        try:
            record = link.call("describe")
            # An agent beside a gateway's scheduler knows no address of its own: it is the cluster's.
            record["address"] = record.get("address") or name_or_address
        finally:
            link.close(say_bye=False)
    attach(pool, record, security, None)
    return pool


def attach(pool, record: dict, security, process) -> None:
    """Make ``pool`` a client of the agent that ``record`` describes, showing ``security``
    (by default the owner's credentials, beside the record)."""
    if security is None:
        security = registry.owner_security(record)
    data = dict(record["spec"])
    callable_policy = data.pop("autoscale_callable", False)
    spec = specs.from_dict(specs.PoolSpec, data)
    if callable_policy:                  # shown as a Python policy; it runs in the agent
        spec = _with_policy(spec)
    pool.spec, pool.name, pool._record, pool._ended = spec, spec.name, record, ""
    pool.bus = EventBus()
    link_class = AgentLink
    if record.get("beside_scheduler"):
        from .beside_start import BesideLink as link_class
    link = link_class(record, security, process)
    pool._agent = link
    pool.ledger = LedgerProxy(link, record)       # its file is where the agent runs: read through it
    pool._engine = engine = EngineProxy(link, record, spec)
    try:
        hello = link.call("hello", pid=os.getpid())
    except BaseException:
        link.close(say_bye=False)
        raise
    link.seq = hello["seq"]
    engine.dispatcher.stalled = tuple(hello["stalled"]) if hello["stalled"] else None
    bus = pool.bus

    def deliver(events: list, stalled) -> None:
        bus.publish_many(events)
        engine.dispatcher.deliver(events, stalled)

    def lost(why: str) -> None:
        engine.closed = True
        pool._ended = f"cut off from its agent ({why})"
        engine.dispatcher.wake_all()
    link.start_events(deliver, lost)


def _with_policy(spec: specs.PoolSpec) -> specs.PoolSpec:
    import dataclasses

    def policy_in_the_agent(metrics):
        raise BatchError("this pool's autoscale policy runs in its agent")
    return dataclasses.replace(spec, autoscale=policy_in_the_agent)


# -- starting an agent ------------------------------------------------------------------
def start_agent(pool_class: type, name: Any, args: tuple, kwargs: dict) -> tuple[dict, subprocess.Popen]:
    """Start the agent of a new detached pool and wait until it serves (or says why it cannot)."""
    import cloudpickle
    import dask
    from .service import STATUS_FD, SYS_PATH
    name = task_id(name, "pool name")
    backend = kwargs.get("backend", args[0] if args else "local")
    if backend not in DETACHABLE:
        raise SpecError("detached", True, f"backend {backend!r} cannot be detached yet (detachable: "
                        f"{', '.join(DETACHABLE)})")
    for record in registry.records():
        if record["name"].lower() == name.lower():
            raise SpecError("pool name", name, f"a detached pool of this name runs already (pid {record['pid']}, "
                            f"address {record['address']}); use bnb.Pool.connect({name!r}) or close it first")
    if isinstance(kwargs.get("ledger"), Ledger):      # the agent opens the same file
        kwargs = {**kwargs, "ledger": str(kwargs["ledger"].path)}
    try:
        payload = cloudpickle.dumps({"pool_class": pool_class, "name": name, "args": args, "kwargs": kwargs,
                                     "owner": getpass.getuser()})
    except Exception as exc:  # noqa: BLE001 - name what cannot travel to the agent
        bad = next((k for k, v in kwargs.items() if not _picklable(v)), None)
        raise SpecError(bad or "arguments", "<not shown>", f"cannot be sent to the pool's agent process ({exc})",
                        message=f"{bad or 'a Pool argument'}: cannot be sent to the pool's agent process "
                                f"({exc})") from None
    log_path = registry.folder() / f"{name.lower()}.log"
    read_end, write_end = os.pipe()
    env = {**os.environ, STATUS_FD: str(write_end), SYS_PATH: json.dumps(sys.path),
           "BATCHNB_AGENT_LOG": str(log_path),
           "DASK_INTERNAL_INHERIT_CONFIG": dask.config.serialize(dask.config.global_config)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "batchnb.agent"], stdin=subprocess.PIPE, stdout=log,
                                   stderr=log, env=env, pass_fds=(write_end,), start_new_session=True)
    os.close(write_end)
    try:
        try:
            process.stdin.write(payload)
            process.stdin.close()
        except BrokenPipeError:
            pass                        # it died at once: its log says why, below
        status = _read_status(read_end, process, _start_wait(backend, kwargs))
    finally:
        os.close(read_end)
    if "error" in status:
        error = status["error"]
        if isinstance(error, BaseException):
            raise error.with_traceback(None) from None
        raise BackendError(str(error))
    if "ok" not in status:
        try:            # its end closed the pipe a moment before it can be reaped
            code = process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            process.kill()
            process.wait(10)
        raise BackendError(f"the agent of pool {name!r} did not start ("
                           f"{'exit code ' + str(code) if code is not None else 'no answer in time'}); "
                           f"its log {log_path}:\n{_tail(log_path)}")
    return status["ok"], process


def _start_wait(backend: str, kwargs: dict) -> float:
    """How long the creator waits for its agent. An Azure agent is waited for as long as it waits for
    its scheduler VM (``start_timeout``, 900 s by default, then 300 s to delete it): given up on
    sooner, the agent would be killed with that VM made and not deleted."""
    wait = _config.seconds("agent-start-timeout")
    if backend == "azure":
        given = kwargs.get("start_timeout", 900.0)
        if isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0:
            wait = max(wait, given + 330.0)
    return wait


def _read_status(fd: int, process: subprocess.Popen, timeout: float) -> dict:
    import cloudpickle
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            data += chunk
        elif process.poll() is not None and not data:
            break
    try:
        return cloudpickle.loads(data) if data else {}
    except Exception as exc:  # noqa: BLE001 - an error class this process cannot load
        return {"error": BackendError(f"the agent could not start: {exc}")}


def _picklable(value: Any) -> bool:
    import cloudpickle
    try:
        cloudpickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
