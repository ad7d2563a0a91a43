"""Typed event records and the bus that carries them.

The engine publishes; the ledger's readers, the views, the terminal progress
and ``job.wait()`` subscribe. Subscribers with an ``interval`` receive the
events gathered since their last call, at most once per interval, from one
shared flusher thread, so a widget never redraws more often than it can.

>>> bus = EventBus()
>>> seen = []
>>> sub = bus.subscribe(seen.extend)
>>> bus.publish(JobStateChanged("j", "active", 0.0))
>>> seen[0].state
'active'
>>> sub.close()
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

log = logging.getLogger("batchnb.events")


@dataclass(frozen=True, slots=True)
class TaskStateChanged:
    job_id: str
    task_id: str
    state: str
    previous: str | None
    time: float
    attempt: int = 0
    node_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TasksAdded:
    job_id: str
    count: int
    time: float
    states: dict | None = None     # how many of them start in each state


@dataclass(frozen=True, slots=True)
class JobStateChanged:
    job_id: str
    state: str
    time: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class NodeStateChanged:
    pool: str
    node_id: str
    group: str
    state: str
    time: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BytesMoved:
    job_id: str
    task_id: str
    direction: str          # "in" | "out"
    nbytes: int
    seconds: float
    time: float


@dataclass(frozen=True, slots=True)
class CostSample:
    pool: str
    time: float
    total: float
    rate_per_hour: float
    currency: str = "USD"
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class PoolTargets:
    pool: str
    time: float
    dedicated: int
    spot: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PoolStalledChanged:
    """Tasks wait and no node of the pool can run them (``reason``), or again can (``reason`` "")."""

    pool: str
    time: float
    reason: str = ""


Event = (TaskStateChanged | TasksAdded | JobStateChanged | NodeStateChanged | BytesMoved | CostSample
         | PoolTargets | PoolStalledChanged)


class Subscription:
    """A subscriber's handle; ``close()`` stops delivery."""

    def __init__(self, bus: "EventBus", callback: Callable[[list], None], interval: float | None,
                 accept: Callable[[object], bool] | None, on_close: Callable[[], None] | None = None):
        self._bus = bus
        self.callback = callback
        self.interval = interval
        self.accept = accept
        self.on_close = on_close           # called once when the bus closes (its pool closed)
        self.pending: list = []
        self.last_flush = 0.0
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._bus._remove(self)

    def flush(self) -> None:
        """Deliver what is pending now (used at the end of a job, so views show the final state)."""
        self._bus._flush_one(self, force=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EventBus:
    """Thread-safe publish/subscribe with throttled subscribers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False

    def subscribe(self, callback: Callable[[list], None], *, interval: float | None = None,
                  job_id: str | None = None, kinds: tuple[type, ...] | None = None,
                  on_close: Callable[[], None] | None = None) -> Subscription:
        """Call ``callback(events)`` with lists of events.

        ``interval`` None delivers on the publisher's thread at once (keep the
        callback quick); a number gathers events and delivers them at most
        once per ``interval`` seconds from the flusher thread.
        """
        def accept(ev, job_id=job_id, kinds=kinds):
            if kinds is not None and not isinstance(ev, kinds):
                return False
            return job_id is None or getattr(ev, "job_id", job_id) in (job_id, None)
        sub = Subscription(self, callback, interval, accept if (job_id or kinds) else None, on_close)
        with self._lock:
            if self._closed:           # nothing will be published any more
                sub.closed = True
                return sub
            self._subs.append(sub)
            if interval is not None and self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="batchnb-events", daemon=True)
                self._flusher.start()
        return sub

    def publish(self, event) -> None:
        self.publish_many((event,))

    def publish_many(self, events: Iterable) -> None:
        events = list(events)
        if not events:
            return
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            chosen = events if sub.accept is None else [e for e in events if sub.accept(e)]
            if not chosen:
                continue
            if sub.interval is None:
                self._call(sub, chosen)
            else:
                with self._lock:
                    sub.pending.extend(chosen)
                self._wake.set()

    def close(self) -> None:
        """The pool closed: deliver what is pending, end every subscription (telling each
        subscriber, so views let go of the pool) and let the flusher thread end."""
        with self._lock:
            self._closed = True
            subs, self._subs = list(self._subs), []
        for sub in subs:
            self._flush_one(sub, force=True)
            sub.closed = True
            if sub.on_close is not None:
                try:
                    sub.on_close()
                except Exception:  # a broken view must not stop a pool closing
                    log.exception("batchnb event subscriber %r failed to close", sub.callback)
        self._wake.set()

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @staticmethod
    def _call(sub: Subscription, events: list) -> None:
        try:
            sub.callback(events)
        except Exception:  # a broken view must never stop the engine
            log.exception("batchnb event subscriber %r failed", sub.callback)

    def _flush_one(self, sub: Subscription, force: bool = False) -> float | None:
        """Deliver ``sub``'s pending events if due; return seconds until it is due, or None."""
        now = time.monotonic()
        with self._lock:
            if not sub.pending:
                return None
            wait = sub.last_flush + (sub.interval or 0) - now
            if wait > 0 and not force:
                return wait
            events, sub.pending = sub.pending, []
            sub.last_flush = now
        if not sub.closed:
            self._call(sub, events)
        return None

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            with self._lock:
                subs = [s for s in self._subs if s.interval is not None]
                if not subs:          # the last throttled subscriber left: so does this thread
                    self._flusher = None
                    return
            waits = [w for w in (self._flush_one(s) for s in subs) if w is not None]
            if waits:
                time.sleep(min(waits))
                self._wake.set()
