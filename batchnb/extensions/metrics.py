"""Prometheus metrics of a pool: ``batchnb_*`` families on an endpoint of the engine's own.

Why an endpoint of its own, not the Dask dashboard's ``/metrics``: that page
is served by the *scheduler's* process, and the batchnb engine (the ledger,
the dispatcher's counters) runs in the driver — the kernel, or the detached
agent. A collector registered there would see none of it. So the engine
serves its own small WSGI endpoint on 127.0.0.1 (``batchnb.metrics-port``;
0 picks a free port), started the first time ``pool.metrics_url`` is read.

The extension follows the engine's events (on the dispatcher's thread) and
keeps counters and histograms; a scrape takes one snapshot of them and of the
dispatcher's task counts and node table, on the dispatcher's thread, so the
figures of one scrape agree with each other. The same record feeds the alert
rules (:mod:`batchnb.extensions.alerts`).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque

from .. import _config
from ..engine.events import BytesMoved, CostSample, JobStateChanged, NodeStateChanged, TasksAdded, TaskStateChanged
from ..engine.extension import PoolExtension
from ..errors import BatchError
from ..states import TASK_STATE_ORDER, NodeState, TaskState

#: Upper bounds (seconds) of the run-time and wait-time histograms' buckets.
BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


# The words a task event carries, read once (an enum's ``.value`` is slow, and this runs twice a task).
_RUNNING, _ACTIVE, _SUCCEEDED, _CANCELLED = (TaskState.RUNNING.value, TaskState.ACTIVE.value,
                                             TaskState.SUCCEEDED.value, TaskState.CANCELLED.value)


class Histogram:
    """Bucket counts and a sum, as Prometheus histograms are exposed (cumulative on output)."""

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], self.counts):
            total += n
            out.append((bound, total))
        return out


class MetricsExtension(PoolExtension):
    """Counts what the engine does, for ``pool.metrics_url`` and the alert rules."""

    def __init__(self, engine):
        super().__init__(engine)
        self.lock = threading.Lock()
        self.run_seconds, self.wait_seconds = Histogram(), Histogram()
        self.retries = self.requeues = self.preemptions = 0
        self.staged = {"in": 0, "out": 0}
        self.cost_total = self.spend_rate = 0.0
        self.ends: deque = deque(maxlen=100_000)      # (time, succeeded) of attempts that ended
        self.progress: dict[str, float] = {}          # live job -> last time a task of it ended
        self._running: dict[tuple, float] = {}        # (job, task) -> when its attempt started
        self._ready: dict[tuple, float] = {}          # (job, task) -> when it became ready again
        self._added: dict[str, deque] = {}            # job -> [time, count] of tasks added ready
        self._sub = None
        self._server = None
        self.url: str | None = None

    def start(self) -> None:
        self._sub = self.engine.bus.subscribe(self._on_events)

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- what the engine did ------------------------------------------------------
    def _on_events(self, events: list) -> None:
        with self.lock:
            for ev in events:
                if isinstance(ev, TaskStateChanged):
                    self._task(ev)
                elif isinstance(ev, TasksAdded):
                    ready = (ev.states or {}).get(TaskState.ACTIVE.value, 0) if ev.states else ev.count
                    if ready:
                        self._added.setdefault(ev.job_id.lower(), deque()).append([ev.time, ready])
                    self.progress.setdefault(ev.job_id, ev.time)
                elif isinstance(ev, JobStateChanged) and ev.state != "active":
                    self.progress.pop(ev.job_id, None)
                    self._added.pop(ev.job_id.lower(), None)
                    for key in [k for k in self._ready if k[0] == ev.job_id.lower()]:
                        del self._ready[key]
                elif isinstance(ev, NodeStateChanged) and ev.state == NodeState.PREEMPTED.value:
                    self.preemptions += 1
                elif isinstance(ev, BytesMoved):
                    self.staged[ev.direction] = self.staged.get(ev.direction, 0) + ev.nbytes
                elif isinstance(ev, CostSample) and ev.job_id is None:
                    self.cost_total, self.spend_rate = ev.total, ev.rate_per_hour

    def _task(self, ev: TaskStateChanged) -> None:
        key = (ev.job_id.lower(), ev.task_id.lower())
        if ev.state == _RUNNING:
            since = self._ready.pop(key, None)
            if since is None:
                since = self._take_added(key[0])
            if since is not None:
                self.wait_seconds.observe(ev.time - since)
            self._running[key] = ev.time
            return
        if ev.state == _ACTIVE:
            self._ready[key] = ev.time
        else:
            self._ready.pop(key, None)      # cancelled or blocked while it waited: it waits no more
        if ev.previous != _RUNNING:
            return
        started = self._running.pop(key, None)
        if started is not None:
            self.run_seconds.observe(ev.time - started)
        if ev.state == _ACTIVE and not (ev.reason or "").startswith("retry"):
            self.requeues += 1       # its node was lost under it: not an end, not a retry
            return
        if ev.state == _ACTIVE:
            self.retries += 1
        if ev.state != _CANCELLED:
            self.ends.append((ev.time, ev.state == _SUCCEEDED))
            if ev.job_id in self.progress:
                self.progress[ev.job_id] = ev.time

    def _take_added(self, job_key: str) -> float | None:
        queue = self._added.get(job_key)
        if not queue:
            return None
        head = queue[0]
        head[1] -= 1
        if head[1] <= 0:
            queue.popleft()
        return head[0]

    def oldest_wait(self, now: float) -> dict[str, float]:
        """Job id (lower case) -> how long its longest-waiting ready task has waited."""
        out: dict[str, float] = {}
        with self.lock:
            for (job, _), t in self._ready.items():
                out[job] = max(out.get(job, 0.0), now - t)
            for job, queue in self._added.items():
                if queue:
                    out[job] = max(out.get(job, 0.0), now - queue[0][0])
        return out

    # -- a scrape --------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Every figure of one scrape, taken on the dispatcher's thread (one consistent picture)."""
        dispatcher = self.engine.dispatcher

        def take():
            with self.lock:
                tasks = {job.spec.id: {s.value: job.counts[s] for s in TASK_STATE_ORDER}
                         for job in dispatcher.jobs.values()}
                nodes: dict[tuple, int] = {}
                for node in dispatcher.nodes.nodes.values():
                    nodes[(node.group, node.state.value)] = nodes.get((node.group, node.state.value), 0) + 1
                return {"tasks": tasks, "nodes": nodes,
                        "slots_used": sum(n.used for n in dispatcher.nodes.nodes.values()),
                        "run": (self.run_seconds.cumulative(), self.run_seconds.sum),
                        "wait": (self.wait_seconds.cumulative(), self.wait_seconds.sum),
                        "retries": self.retries, "requeues": self.requeues, "preemptions": self.preemptions,
                        "staged": dict(self.staged), **self._money(dispatcher)}
        return dispatcher.call(take, timeout=10.0)

    def _money(self, dispatcher) -> dict:
        """The pool's cost so far, its burn, and each live budgeted job's spent / budget (on the
        dispatcher's thread, as the cost extension's meter is)."""
        from .cost import CostExtension
        cost = self.engine.extension(CostExtension)
        if cost is None:
            return {"cost": self.cost_total, "rate": self.spend_rate, "budget": {}}
        now = time.time()
        cost._flush()
        pool_cost = cost.meter.cost(now)
        return {"cost": pool_cost.total, "rate": pool_cost.rate_per_hour,
                "budget": {job.spec.id: cost.spent(job, now) / job.spec.budget for job in dispatcher.jobs.values()
                           if job.spec.budget and job.state.value == "active"}}

    def serve(self) -> str:
        """Start the endpoint (once) and return its URL."""
        with self.lock:
            if self.url is not None:
                return self.url
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise BatchError("pool.metrics_url needs prometheus_client: pip install batchnb[monitoring]") from None
        from .metrics_export import PoolCollector
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PoolCollector(self.engine.name, self.snapshot))
        port = int(_config.get("metrics-port") or 0)
        server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
        with self.lock:
            self._server = server
            self.url = f"http://127.0.0.1:{server.server_port}/metrics"
            return self.url
