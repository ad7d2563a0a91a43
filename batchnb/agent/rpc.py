"""The agent's operations: what a client may ask of the pool the agent runs.

Each operation is a handler of a ``distributed.core.Server`` on Dask's
``tls://`` comm: a caller shows a certificate of the pool's CA, whose subject
CN is its identity (:mod:`.tls`), and every operation first checks that the
identity holds the role the operation needs (:mod:`.access`, one table); a
caller without it gets :class:`~batchnb.PermissionDenied` and nothing
changes. The pool is driven through its own methods (``pool.job``,
``job.add_tasks``, ``job.terminate``, ``pool.nodes``...), so a detached pool
runs exactly the code of an in-kernel one. Blocking calls run on a thread
pool, never on the server's event loop. Every answer is ``{"ok": value}`` or
``{"error": packed exception}`` (:mod:`.wire`).

The pool's events are numbered and kept (the last ``keep``) for clients,
which poll them with a timeout (``events``): the poll is how a client's
views and ``job.wait()`` hear of changes, and also how the agent knows a
client is there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import inspect
import itertools
import json
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import spec as specs
from ..engine import audit
from ..engine.events import PoolStalledChanged
from ..errors import BatchError, SpecError
from ..states import JobState
from .access import RoleOps, allowed, need
from .arrayops import ArrayOps
from .reads import ReadOps
from .tls import identity_of
from .wire import pack_error, pack_event

if TYPE_CHECKING:
    import batchnb

log = logging.getLogger("batchnb.agent")

#: Pool methods a client may call by name (their answers travel pickled).
POOL_CALLS = frozenset({"nodes", "preempt", "resize", "evaluate_autoscale", "audit"})
#: A client that neither polls nor calls for this long is gone (killed, or its machine asleep).
CLIENT_SILENCE = 15.0
#: Seconds a caller's allowed role is trusted without asking the roles table again.
GRANT_FRESH = 2.0


class EventLog:
    """The pool's events, numbered from 1, the newest ``keep`` of them."""

    def __init__(self, bus, loop: asyncio.AbstractEventLoop, keep: int = 100_000):
        self._items: deque = deque(maxlen=keep)
        self._seq = 0
        self._lock = threading.Lock()
        self._loop = loop
        self._changed = asyncio.Event()
        self._wake_pending = False
        self.stalled: list | None = None          # [since, why] while the pool cannot run its tasks
        self._sub = bus.subscribe(self._on_events)

    def _on_events(self, events: list) -> None:
        # On the dispatcher's thread: record and wake the loop, nothing more.
        with self._lock:
            for event in events:
                self._seq += 1
                self._items.append((self._seq, event))
                if isinstance(event, PoolStalledChanged):
                    self.stalled = [event.time, event.reason] if event.reason else None
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:      # the loop closed: the agent is stopping
                pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def seq(self) -> int:
        return self._seq

    def since(self, seq: int, limit: int) -> tuple[list, int]:
        """Events numbered after ``seq`` (at most ``limit``), and the number of the last one given."""
        with self._lock:
            if seq >= self._seq or not self._items:
                return [], self._seq
            first = self._items[0][0]
            start = max(0, seq + 1 - first)     # events older than the log keeps are gone
            items = list(itertools.islice(self._items, start, start + limit))
        return [e for _, e in items], items[-1][0]

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            pass

    def close(self) -> None:
        self._sub.close()


class AgentHandlers(RoleOps, ReadOps, ArrayOps):
    """The operations of one agent, bound to the pool it runs."""

    def __init__(self, pool: batchnb.Pool, loop: asyncio.AbstractEventLoop, tls_files: dict | None = None):
        self.pool = pool
        self.tls_files = tls_files or {}
        self.record: dict = {}                         # what the registry holds (describe)
        self.loop = loop
        self.log = EventLog(pool.bus, loop)
        self.jobs: dict[str, Any] = {}                 # job key -> the agent's own Job
        self.clients: dict[str, float] = {}            # client id -> last heard of (monotonic)
        self.polling: dict[str, int] = {}              # client id -> polls waiting now
        self._granted: dict[tuple, float] = {}          # (caller, role needed) -> allowed until (monotonic)
        self.greeted = False                           # a client has said hello (the creator, at first)
        self.stop = asyncio.Event()
        self.stop_reason: str | None = None
        self._executor = cf.ThreadPoolExecutor(8, thread_name_prefix="batchnb-agent")

    def handlers(self) -> dict:
        ops = ("hello", "bye", "open_job", "add_tasks", "terminate", "events", "pool_call", "extension_get",
               "requested", "close_pool", *RoleOps.OPS, *ReadOps.OPS, *ArrayOps.OPS)
        return {f"bnb_{name}": self._guard(getattr(self, name)) for name in ops}

    def _guard(self, method):
        name = method.__name__
        wants_caller = "caller" in inspect.signature(method).parameters

        async def handler(comm, client: str = "", **kwargs):
            caller = identity_of(comm)
            try:
                needed, ok = await self._run(self._permitted, name, kwargs, caller)
                if not ok:
                    raise await self._run(self.denied, caller, name, needed)
                if client and name != "bye":
                    self.clients[client] = time.monotonic()
                if wants_caller:
                    kwargs["caller"] = caller
                with audit.acting_as(caller):         # what the pool records is done by the caller
                    return {"ok": await method(client=client, **kwargs)}
            except Exception as exc:  # noqa: BLE001 - every error goes back to the caller, as in-kernel
                if not isinstance(exc, BatchError):
                    log.exception("agent: %s failed", method.__name__)
                return {"error": pack_error(exc)}
        handler.__name__ = method.__name__
        return handler

    def _permitted(self, op: str, kwargs: dict, caller: str | None) -> tuple:
        """The role ``op`` needs and whether ``caller`` holds it. A yes is kept for ``GRANT_FRESH``
        seconds (a client's reads are many, each would ask the roles table again); a grant or revoke
        forgets every kept yes at once."""
        needed = need(op, kwargs, self._job_exists)
        if caller is None:
            return needed, False
        key, now = (caller, needed), time.monotonic()
        if self._granted.get(key, 0.0) > now:
            return needed, True
        ok = allowed(self.pool.ledger, self.pool.name, caller, needed)
        if ok:
            self._granted[key] = now + GRANT_FRESH
        return needed, ok

    def _job_exists(self, job_id) -> bool:
        return isinstance(job_id, str) and self.pool.ledger.job(job_id) is not None

    async def _run(self, fn, *args, **kwargs):
        # The caller's identity (audit.acting_as) goes with the work to the pool's thread.
        context = contextvars.copy_context()
        return await self.loop.run_in_executor(self._executor, lambda: context.run(fn, *args, **kwargs))

    # -- clients ---------------------------------------------------------------
    def connected(self) -> list[str]:
        """Clients that poll now or were heard of lately."""
        now = time.monotonic()
        return [c for c, seen in self.clients.items() if self.polling.get(c) or now - seen < CLIENT_SILENCE]

    async def hello(self, client: str, pid: int | None = None) -> dict:
        self.greeted = True
        log.info("agent: client %s (pid %s) connected", client, pid)
        return {"seq": self.log.seq, "stalled": self._stalled()}

    async def bye(self, client: str) -> None:
        self.clients.pop(client, None)
        log.info("agent: client %s left", client)

    async def events(self, client: str, since: int = 0, timeout: float = 5.0, limit: int = 20_000) -> dict:
        self.polling[client] = self.polling.get(client, 0) + 1
        try:
            items, last = self.log.since(since, limit)
            if not items and not self.stop.is_set():
                await self.log.wait(min(float(timeout), 30.0))
                items, last = self.log.since(since, limit)
        finally:
            self.polling[client] -= 1
            self.clients[client] = time.monotonic()
        return {"events": [pack_event(e) for e in items], "seq": last, "stalled": self._stalled(),
                "closing": self.stop.is_set()}

    def _stalled(self) -> list | None:
        """What a client's ``job.wait()`` reads: the pool's stall, or its dispatcher failing (turns
        that fail, writes the ledger refused), which no event can carry: events follow the commit."""
        failing = self.pool._dispatcher.failing
        return list(failing) if failing else self.log.stalled

    # -- jobs ------------------------------------------------------------------
    def _job(self, job_id: str):
        job = self.jobs.get(job_id.lower())
        if job is None:             # opened by a client before, through another path: re-attach
            row = self.pool.ledger.job(job_id)
            if row is not None and row["pool"] != self.pool.name:     # another pool's, in a shared ledger
                raise SpecError("job", job_id, f"is a job of pool {row['pool']!r}, not of {self.pool.name!r}")
            job = self.jobs[job_id.lower()] = self.pool.job(job_id)
        return job

    async def open_job(self, client: str, spec: dict | None = None, job_id: str | None = None) -> dict:
        def opening():
            given = specs.from_dict(specs.JobSpec, spec) if spec is not None else job_id
            job = self.pool.job(given)
            self.jobs[job.id.lower()] = job
            row = self.pool.ledger.job(job.id)
            return {"spec": json.loads(row["spec"]), "created": row["created"], "state": row["state"],
                    "pool": row["pool"], "reason": row["reason"], "ended": row["ended"]}
        return await self._run(opening)

    async def add_tasks(self, client: str, job_id: str, tasks: list, replace: bool = False) -> list[str]:
        def adding():
            items = [specs.from_dict(specs.TaskSpec, d) for d in tasks]
            return [t.task_id for t in self._job(job_id).add_tasks(items, replace=replace)]
        return await self._run(adding)

    async def terminate(self, client: str, job_id: str, reason: str = "terminated") -> None:
        await self._run(lambda: self._job(job_id).terminate(reason))

    def busy(self) -> bool:
        """Some job of this agent has tasks left to run, or is being ended, or an extension has work
        to come (an active job schedule)."""
        disp = self.pool._engine.dispatcher
        return disp.call(lambda: any(j.state == JobState.TERMINATING or (j.state == JobState.ACTIVE and not j.idle)
                                     for j in disp.jobs.values())) or self.pool._engine.keeps_alive()

    # -- the pool --------------------------------------------------------------
    async def pool_call(self, client: str, method: str, args: bytes) -> bytes:
        import cloudpickle
        if method not in POOL_CALLS:
            raise SpecError("method", method, f"not a pool method a client may call ({', '.join(sorted(POOL_CALLS))})")
        a, kw = cloudpickle.loads(args)
        return cloudpickle.dumps(await self._run(getattr(self.pool, method), *a, **kw))

    async def extension_get(self, client: str, cls: bytes, path: str, args: bytes | None = None):
        """Read ``path`` from the pool's extension of class ``cls`` ("method", "object", or a plain
        value, pickled in a 1-tuple), or call it with ``args`` (its answer pickled)."""
        import cloudpickle

        def reach():
            obj = self.pool.extension(cloudpickle.loads(cls))
            if obj is None:
                raise SpecError("extension", path, "this pool has no such extension")
            for part in filter(None, path.split(".")):
                if part.startswith("_"):
                    raise SpecError("path", path, "private attributes are not served")
                obj = getattr(obj, part)
            if args is not None:
                a, kw = cloudpickle.loads(args)
                return cloudpickle.dumps(obj(*a, **kw))
            if callable(obj):
                return "method"
            if _plain(obj):
                return cloudpickle.dumps((obj,))
            return "object"
        return await self._run(reach)

    async def requested(self, client: str) -> dict:
        return await self._run(self.pool._engine.requested)

    async def close_pool(self, client: str) -> None:
        await self.shutdown("closed by a client")

    async def shutdown(self, reason: str) -> None:
        """Close the pool (its nodes and jobs' leases), then let the service stop."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("agent: closing pool %s: %s", self.pool.name, reason)
            try:
                await self._run(self.pool.close)
            finally:
                self.log.close()
                # Answers to the calls in flight (this one too) go out before the server stops.
                self.loop.call_later(0.2, self.stop.set)
        else:
            await self.stop.wait()


def _plain(value) -> bool:
    """Data that travels by value (an object of the engine is reached through, not copied)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) < 10_000 and all(_plain(v) for v in value)
    if isinstance(value, dict):
        return len(value) < 10_000 and all(_plain(k) and _plain(v) for k, v in value.items())
    return False
