"""One client's connection to an agent: its calls, and the thread that hears its events.

Calls run on an event loop of the link's own (a daemon thread), so they work
from any thread of the client, a Jupyter kernel's included; an interrupt in
the caller stops its wait for the answer, never the agent's work. The events
thread long-polls the agent (``batchnb.agent.rpc``), hands what it hears to
the client (``deliver``), and notices an agent that is gone.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import socket
import subprocess
import threading
import time
import uuid
import weakref
from typing import Any, Callable

from ..errors import BackendError, BatchError, PermissionDenied
from .wire import unpack_error, unpack_event

log = logging.getLogger("batchnb.agent")

#: Seconds an events poll waits at the agent before it answers with nothing new.
POLL = 5.0
#: Seconds between two polls that brought events.
PACE = 0.05
_links: "weakref.WeakSet[AgentLink]" = weakref.WeakSet()


def _unreachable(message: str) -> BackendError:
    exc = BackendError(message)
    exc.unreachable = True          # the events thread tells this from the agent's own errors
    return exc


class AgentLink:
    """``security``: the ``distributed.Security`` this client shows the agent (its certificate is who it is)."""

    def __init__(self, record: dict, security, process=None):
        self.name, self.address, self.pid = record["name"], record["address"], record.get("pid")
        self._security = security
        self.process = process          # the Popen when this process started the agent
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.closed = False
        self._stopping = threading.Event()
        self.lost: str | None = None    # why the agent is out of reach, once it is
        self.seq = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"batchnb-agent-{self.name}",
                                        daemon=True)
        self._thread.start()
        self._rpc = asyncio.run_coroutine_threadsafe(self._make_rpc(), self._loop).result(30)
        self._poller: threading.Thread | None = None
        _links.add(self)

    async def _make_rpc(self):
        from distributed.core import rpc
        return rpc(self.address, connection_args=self._security.get_connection_args("client"))

    def call(self, op: str, *, wait: float | None = None, **kwargs: Any) -> Any:
        """Ask the agent ``op``; its answer, or the error it raised (as the pool in-kernel would)."""
        if self.closed:
            raise BatchError(f"this client of detached pool {self.name!r} is disconnected; "
                             f"bnb.Pool.connect({self.name!r}) makes a new one")
        future = asyncio.run_coroutine_threadsafe(self._call(op, kwargs), self._loop)
        try:
            return future.result(wait)
        except BatchError as exc:
            raise exc.with_traceback(None) from None

    async def _call(self, op: str, kwargs: dict) -> Any:
        from distributed.comm.core import CommClosedError, FatalCommClosedError
        try:
            answer = await getattr(self._rpc, f"bnb_{op}")(client=self.id, **kwargs)
        except FatalCommClosedError as exc:       # the TLS handshake failed: not the pool's CA
            raise PermissionDenied(f"the agent of pool {self.name!r} at {self.address} and this client do not "
                                   f"trust each other's certificates ({exc}); connect with credentials of this "
                                   "pool (its owner makes them: pool.credentials(identity))") from None
        except (OSError, CommClosedError, asyncio.TimeoutError) as exc:
            raise _unreachable(f"the agent of pool {self.name!r} at {self.address} cannot be reached ({exc}); "
                               "bnb.pools() lists the running ones") from None
        if "error" in answer:
            raise unpack_error(answer["error"])
        return answer["ok"]

    # -- events ------------------------------------------------------------------
    def start_events(self, deliver: Callable[[list, Any], None], on_lost: Callable[[str], None]) -> None:
        self._poller = threading.Thread(target=self._poll, args=(deliver, on_lost), daemon=True,
                                        name=f"batchnb-agent-events-{self.name}")
        self._poller.start()

    def _poll(self, deliver, on_lost) -> None:
        misses = 0
        while not self.closed:
            try:
                answer = self.call("events", since=self.seq, timeout=POLL)
            except Exception as exc:  # noqa: BLE001 - sorted below; a view must not lose its pool over one answer
                if self.closed:
                    return              # disconnected meanwhile
                if isinstance(exc, PermissionDenied):   # its role was revoked: asking again is refused again
                    self.lost = str(exc)
                    on_lost(self.lost)
                    return
                if not getattr(exc, "unreachable", False):
                    log.warning("batchnb: events of pool %s: %s", self.name, exc)
                    self._stopping.wait(1.0)
                    continue
                misses += 1
                if misses >= 3 or not self.agent_alive():
                    self.lost = str(exc)
                    on_lost(self.lost)
                    return
                continue
            misses = 0
            self.seq = answer["seq"]
            events = [e for e in (unpack_event(k, v) for k, v in answer["events"]) if e is not None]
            try:
                deliver(events, answer["stalled"])
            except Exception:  # noqa: BLE001 - a broken subscriber must not stop the others hearing
                log.exception("batchnb: delivering events of pool %s", self.name)
            if events:
                # At most ~20 answers a second: views redraw less often than that, and each
                # answer wakes this client's waits, which read the ledger.
                self._stopping.wait(PACE)
            if answer.get("closing") and not events:
                if not self.agent_alive():
                    self.lost = f"the agent of pool {self.name!r} stopped"
                    on_lost(self.lost)
                    return

    def agent_alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        if self.pid is None:            # beside a remote scheduler: alive while it answers
            return self._answers()
        from . import registry
        return self.pid is not None and registry.alive({"pid": self.pid})

    def _answers(self) -> bool:
        from . import registry
        return registry.answers_at(self.address, self._security, timeout=5)

    def wait_agent_gone(self, timeout: float) -> bool:
        """Wait (bounded) until the agent's process has ended; True if it has."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        # Not our child: it may stay a zombie until its parent reaps it, which is gone for us.
        deadline = time.monotonic() + timeout
        while self.agent_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # -- ending ------------------------------------------------------------------
    def close(self, say_bye: bool = True) -> None:
        """Leave the agent (it keeps running) and end this link's threads."""
        if self.closed:
            return
        if say_bye and self.lost is None:
            try:
                self.call("bye", wait=5)
            except Exception:  # noqa: BLE001 - the agent is gone or busy: it notices the silence
                pass
        self.closed = True
        self._stopping.set()
        _links.discard(self)

        async def stop():
            await self._rpc.close_rpc()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        except Exception:  # noqa: BLE001 - the loop is stopping anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(5)


@atexit.register
def _leave_all() -> None:
    # A script or kernel that ends leaves its detached pools running: it only says goodbye.
    for link in list(_links):
        try:
            link.close()
        except Exception:  # noqa: BLE001 - the interpreter is going away
            pass
