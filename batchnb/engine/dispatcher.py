"""The engine: one dispatcher per pool, on its own thread.

It keeps the ready queue (job priority, task priority, order of adding),
dependencies, retries with backoff, exit conditions and requeues, and at
most one Dask future per busy slot (a bundle of tiny tasks counts as one),
so a million-task job costs the Dask scheduler what a thousand-task job does.
Each turn of its loop writes what changed to the ledger in one transaction
and only then publishes the events. User threads talk to it through
:meth:`Dispatcher.call`, which runs a function on the dispatcher's thread
and hands back its result or its exception.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable

from .. import _config
from .jobrun import JobRun, TaskRun
from .nodes import NodeTable
from .jobops import JobOps
from .multiinstance import MultiInstances
from .jobprep import JobPreps
from .outcome import Outcomes
from .bundles import Bundles
from .queued import QueuedBundles
from ..node import bundle as _bundle
from .spotfallback import SpotFallback
from .taskstore import TaskPaging
from .results import Results
from .stalls import _WAITING_FOR_WORKER, Stalls
from .posted import Posted
from ..errors import BatchError
from .events import EventBus, NodeStateChanged
from .ledger import Batch, Ledger
from ..states import NodeState

log = logging.getLogger("batchnb.dispatch")


class Dispatcher(TaskPaging, Results, QueuedBundles, Bundles, Outcomes, JobOps, MultiInstances, Stalls):
    def __init__(self, engine, client, ledger: Ledger, bus: EventBus):
        self.engine = engine              # the EngineHandle: the pool's settings, workers and hooks
        self.client = client
        self.ledger = ledger
        self.bus = bus
        self.jobs: dict[str, JobRun] = {}
        self.nodes = NodeTable(engine.spec.node_fill)
        self.ready: list = []             # heap of (-job prio, -task prio, seq, job key, task key)
        self.timers: list = []            # heap of (when, n, callable)
        self.inflight: dict[str, tuple] = {}   # future key -> (future, node id, [(job key, task key, n)], slots)
        self.queued_keys: dict[str, list] = {}  # future key -> its keys, while it waits behind busy slots
        self.fallback = SpotFallback(getattr(engine, "spot_fallback", None))
        self.multi: dict = {}             # (job key, task key) -> MultiRun: multi-instance tasks running
        self.batch = Batch()
        self.events: list = []
        self.preps = JobPreps(self)       # jobs' preparation and release tasks
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._counter = itertools.count()
        self._closing = False
        self._node_poll = _config.seconds("node-poll")
        self._next_poll = 0.0
        self._bundle_target = _config.seconds("bundle-target")
        self._inline_max = int(_config.get("result-inline-max"))   # read once: dask.config.get costs ~0.1 ms
        self._pace: dict[str, float | None] = {"python": None, "command": None}   # bundles.py
        # Fetching results and cancelling futures talk to workers that may be dead: they run on
        # threads of their own, so the dispatcher's thread never waits on the network.
        self._result_timeout = _config.seconds("result-timeout")
        self._node_start_timeout = _config.seconds("node-start-timeout")
        #: (since, why) while no node can run the tasks that wait, else None; job.wait() reads it
        self.stalled: tuple[float, str] | None = None
        #: (since, why) while its turns fail one after another, or for good once a turn's writes
        #: were lost (stalls.py); job.wait() reads it as it reads ``stalled``
        self.failing: tuple[float, str] | None = None
        self._lost_writes = False
        self._gathering: dict[int, list] = {}      # token -> [(future, inflight entry)] being fetched
        self._gatherer = self._new_gatherer()
        self._releaser = cf.ThreadPoolExecutor(1, thread_name_prefix=f"batchnb-release-{engine.name}")
        self._thread = threading.Thread(target=self._loop, name=f"batchnb-dispatch-{engine.name}", daemon=True)
        self.posted = Posted(self)        # adds not waited for (job.submit): the ledger's reads wait for them
        ledger.barriers.append(self.posted.wait)

    # -- the thread ----------------------------------------------------------
    def start(self) -> None:
        self._poll_nodes(time.time())
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.call(self._shutdown)
            self._thread.join(timeout=30)

    def call(self, fn: Callable, *args, timeout: float | None = 60.0, **kwargs) -> Any:
        """Run ``fn`` on the dispatcher's thread; return its result or raise its exception."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        return self.result_of(self.call_soon(fn, *args, **kwargs), timeout)

    def call_soon(self, fn: Callable, *args, **kwargs) -> cf.Future:
        """Queue ``fn`` for the dispatcher's thread and return at once; :meth:`result_of` its future
        (a large add builds its next chunk meanwhile)."""
        if not self._thread.is_alive():
            raise RuntimeError("the pool is closed; make a new bnb.Pool(...)")
        reply: cf.Future = cf.Future()
        self._q.put(("call", contextvars.copy_context().run, (fn, *args), kwargs, reply))   # with audit identity
        return reply

    @staticmethod
    def result_of(reply: cf.Future, timeout: float | None = 60.0) -> Any:
        try:
            return reply.result(timeout=timeout)
        except BatchError as exc:
            # The user's mistake: show it from the user's call, not from inside the engine.
            raise exc.with_traceback(None) from None

    def task_ids(self, future_key: str) -> list[str]:
        """The ids of the tasks riding in one Dask future."""
        entry = self.inflight.get(future_key)
        if entry is None:
            return self.mi_task_ids(future_key)    # a multi-instance task's hold on a node
        return [self.jobs[j].tasks[t].spec.id for j, t, _ in entry[2] if j in self.jobs and t in self.jobs[j].tasks]

    def at(self, when: float, fn: Callable) -> None:
        heapq.heappush(self.timers, (when, next(self._counter), fn))

    def _loop(self) -> None:
        while not self._closing:
            now = time.time()
            wake = min([self._next_poll] + [self.timers[0][0]] if self.timers else [self._next_poll])
            try:
                items = [self._q.get(timeout=max(0.0, min(wake - now, 1.0)))]
            except queue.Empty:
                items = []
            while len(items) < 5000:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._turn(items)
                self.turn_went_through()
            except Exception as exc:  # the loop must survive anything; the ledger has the truth
                log.exception("batchnb dispatcher turn failed")
                try:       # keep what this turn recorded before it failed
                    self.flush()
                    recorded = True
                except Exception:  # noqa: BLE001 - the ledger itself failed: drop the turn
                    log.exception("batchnb could not record a failed turn")
                    self.batch, self.events = Batch(), []
                    recorded = False
                self.turn_failed(exc, recorded)
        self._answer_late_calls()

    def _answer_late_calls(self) -> None:
        """Calls queued while the pool closed get an error, never a wait that cannot end."""
        self.posted.closed()
        if self.posted.wait in self.ledger.barriers:
            self.ledger.barriers.remove(self.posted.wait)
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item[0] == "call" and item[4] is not None:
                item[4].set_exception(RuntimeError("the pool was closed; make a new bnb.Pool(...)"))

    def _turn(self, items: list) -> None:
        done, replies = [], []
        try:
            for item in items:
                if item[0] == "call":
                    _, fn, args, kwargs, reply = item
                    try:
                        replies.append((reply, fn(*args, **kwargs), None))
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        if reply is None:
                            log.exception("batchnb: %s failed on the dispatcher", getattr(fn, "__name__", fn))
                        replies.append((reply, None, exc))
                elif item[0] == "done":
                    done.append(item[1])
                elif item[0] == "gathered":
                    self._record_gathered(item[1], item[2])
            if done:
                self._collect(done)
        finally:
            # Callers hear back only once the turn's writes are in the ledger, so what
            # they read next shows them; if recording failed, they hear that.
            try:
                self.flush()
                unrecorded = None
            except Exception as exc:  # noqa: BLE001 - answered below, then raised to the loop
                unrecorded = exc
            self.posted.recorded()        # its tasks' rows are in either way (add_tasks commits them)
            for reply, result, exc in replies:
                if reply is None or reply.done():
                    continue
                exc = exc or (unrecorded and RuntimeError(f"batchnb could not record this change: {unrecorded}"))
                if exc is None:
                    reply.set_result(result)
                else:
                    reply.set_exception(exc)
            if unrecorded is not None:
                raise unrecorded
        now = time.time()
        if now >= self._next_poll:
            self._poll_nodes(now)
        while self.timers and self.timers[0][0] <= now:
            fn = heapq.heappop(self.timers)[2]
            try:
                fn()
            except Exception:  # one timer's failure must not stop the others
                log.exception("batchnb timer %r failed", fn)
        self._schedule(now)
        self.flush()

    def _shutdown(self) -> None:
        self._closing = True
        self.release([fut for fut, *_ in self.inflight.values()])
        self.inflight.clear()
        self._gathering.clear()
        self._gatherer.shutdown(wait=False, cancel_futures=True)
        self._releaser.shutdown(wait=False)

    def flush(self) -> None:
        """Commit this turn's changes, then show them: nothing is seen before it is recorded."""
        if self.batch:
            self.ledger.commit(self.batch)
        if self.events:
            events, self.events = self.events, []
            self.bus.publish_many(events)
            for job in {getattr(e, "job_id", None) for e in events}:
                if job is not None and job.lower() in self.jobs:
                    self.jobs[job.lower()].notify()

    # -- nodes ---------------------------------------------------------------
    def _poll_nodes(self, now: float) -> None:
        self._next_poll = now + self._node_poll
        try:
            workers = self.engine.workers()
        except Exception as exc:  # the scheduler may be briefly unreachable
            log.debug("cannot list workers: %s", exc)
            return
        seen = set()
        for w in workers:
            seen.add(w.name)
            node = self.nodes.nodes.get(w.name)
            if node is not None and node.address is None and node.gone == w.address:
                continue          # lost (e.g. preempted) and not yet dropped by the scheduler
            if node is not None and node.address is not None and node.address != w.address:
                # Restarted (e.g. its nanny after an out-of-memory kill) before we saw it go.
                self.node_lost(node.node_id, NodeState.OFFLINE, "the worker process restarted")
            if node is None or node.address != w.address:
                if w.leaving or self.engine.backend.released(w.name):
                    continue    # a node let go whose worker joined late, or a worker on its way out
                ready = self.engine.node_joined(w, now)
                node = self.nodes.up(w.name, w.address, w.group, w.slots, now, ready=ready)
                node.resources = w.has_slots_resource
                self._node_event(node, now)
            node.cpu, node.memory = w.cpu, w.memory
        for node in list(self.nodes.nodes.values()):
            if node.address is not None and node.node_id not in seen:
                self.node_lost(node.node_id, NodeState.OFFLINE, "the worker left the scheduler")
        requested = self.engine.requested()
        for name, group in requested.items():
            if name not in self.nodes.nodes:
                node = self.nodes.up(name, None, group, self.engine.spec.task_slots_per_node, now, ready=False)
                self.nodes.by_address.pop(None, None)
                self._node_event(node, now)
        for node in list(self.nodes.nodes.values()):
            # A node asked for whose worker has not (re)joined in node-start-timeout is as good
            # as gone: unusable, so that node health replaces it instead of the job waiting on it.
            if node.address is None and node.node_id in requested and node.state in _WAITING_FOR_WORKER \
                    and now - node.since > self._node_start_timeout:
                self.set_node_state(node.node_id, NodeState.UNUSABLE, f"its worker has not joined for "
                                    f"{now - node.since:.0f}s (batchnb.node-start-timeout)")
                self.engine.node_unusable(node.node_id)
        self._check_progress(now)

    def _node_event(self, node, now: float, reason: str | None = None) -> None:
        self.batch.node(self.engine.name, node.node_id, node.group, node.state.value, now)
        self.events.append(NodeStateChanged(self.engine.name, node.node_id, node.group, node.state.value, now, reason))
        self.engine.node_changed(node, now)

    def set_node_state(self, node_id: str, state: NodeState, reason: str | None = None) -> None:
        now = time.time()
        node = self.nodes.set_state(node_id, state, now)
        if node is not None:
            self._node_event(node, now, reason)

    def forget_node(self, node_id: str) -> None:
        node = self.nodes.nodes.pop(node_id, None)
        if node is not None and node.address:
            self.nodes.by_address.pop(node.address, None)

    def node_lost(self, node_id: str, state: NodeState, reason: str) -> None:
        """A node died (preempted, crashed, removed): requeue what ran there.

        A loss that is not a preemption counts against the node's health, as in Azure: a
        node whose worker keeps dying becomes unusable and is replaced."""
        now = time.time()
        node = self.nodes.nodes.get(node_id)
        if node is None:
            return
        was_unusable = node.state == NodeState.UNUSABLE
        planned = state != NodeState.PREEMPTED and self.engine.backend.planned_loss(node_id)
        reason = planned or reason       # e.g. a batch job's walltime: shown, and not the node's failure
        self.requeue_node(node_id, reason, now, crash=state != NodeState.PREEMPTED,
                          preempted=state == NodeState.PREEMPTED)
        self.nodes.lost(node_id, state, now)
        self._node_event(node, now, reason)
        # Not for a node already given up (unusable, or released: its worker leaving is expected).
        if state != NodeState.PREEMPTED and not planned and not was_unusable and node_id in self.engine.requested():
            self.infra_failure(node, f"its worker was lost: {reason}")

    def infra_failure(self, node, what: str) -> None:
        """One more failure not of the tasks' own making on ``node``; unusable past the limit."""
        node.infra_failures += 1
        if node.infra_failures >= int(_config.get("unusable-after")) and node.state != NodeState.UNUSABLE:
            self.set_node_state(node.node_id, NodeState.UNUSABLE,
                                f"{node.infra_failures} consecutive failures not of the tasks' own making "
                                f"(last: {what})")
            self.engine.node_unusable(node.node_id)

    def requeue_node(self, node_id: str, reason: str, now: float | None = None, crash: bool = False,
                     preempted: bool = False) -> list:
        """Requeue every attempt running on ``node_id`` (its Dask futures are cancelled)."""
        now = time.time() if now is None else now
        requeued = []
        for key, (fut, nid, members, slots) in list(self.inflight.items()):
            if nid == node_id:
                del self.inflight[key]
                self.release([fut])
                self.nodes.give_back(node_id, key, slots, now)
                for job_key, task_key, n in members:
                    self.requeue(job_key, task_key, n, now, reason, crash=crash, preempted=preempted)
                    requeued.append((job_key, task_key))
        # A multi-instance task may have nothing in flight there (between its two phases).
        return requeued + self.mi_node_lost(node_id, reason, now, crash, preempted)

    def post(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the dispatcher's thread soon, without waiting (safe from Dask callbacks)."""
        self._q.put(("call", fn, args, {}, None))

    # -- dispatching -----------------------------------------------------------
    def push_ready(self, job: JobRun, tr: TaskRun) -> None:
        prio = tr.spec.priority or 0
        heapq.heappush(self.ready, (-job.spec.priority, -prio, tr.seq, job.key, tr.key))

    def _schedule(self, now: float) -> None:
        skipped, held = [], []
        self.nodes.held.clear()           # a waiting multi-instance task claims its nodes anew each pass
        self.start_queued(now)            # bundles queued behind slots given back this turn
        self.page_in()                    # tasks waiting in the ledger alone: a window of them
        while self.ready and self.nodes.free_slots() > 0:
            entry = heapq.heappop(self.ready)
            job, tr = self._lookup(entry[3], entry[4])
            if tr is None or not self.dispatchable(job, tr):
                continue
            if not self.engine.may_dispatch(job, tr, now):
                held.append(entry)
                continue
            if tr.spec.multi_instance is not None:
                if not self.mi_start(job, tr, now):
                    skipped.append(entry)
                continue
            node = self.nodes.place(tr.spec.required_slots, self.fallback_group(job, tr))
            node = self.preps.place(job, tr, node, now)    # a job's preparation task first
            if node is None:
                skipped.append(entry)
                if len(skipped) > 64:
                    break
                continue
            size = self._bundle_size(job, tr, node, now) if self.bundleable(tr) else 1
            self._submit(node, self.fill_bundle(node, [(job, tr)], {(entry[3], entry[4])}, size), now)
        for entry in skipped + held:
            heapq.heappush(self.ready, entry)
        self.send_queued(now)

    def fill_bundle(self, node, members: list, taken: set, size: int) -> list:
        """``members`` and the tasks after them in the ready queue that may share their Dask task
        on ``node``, up to ``size``; ``taken``: the (job key, task key) pairs of ``members``."""
        while len(members) < size and self.ready:
            head = self.ready[0]
            nxt = self._lookup(head[3], head[4])
            # A task may be in the queue twice (made ready again while a stale entry waited):
            # it goes once; the other entry is dropped here as it would be once it runs.
            if nxt[1] is None or not self.dispatchable(*nxt) or (head[3], head[4]) in taken:
                heapq.heappop(self.ready)
                continue
            taken.add((head[3], head[4]))
            if not self.bundleable(nxt[1]) or self.fallback_group(*nxt) not in (None, node.group):
                break
            if not self.preps.ready_on(nxt[0], node):
                break
            heapq.heappop(self.ready)
            members.append(nxt)
        return members

    def _lookup(self, job_key: str, task_key: str):
        job = self.jobs.get(job_key)
        return job, (job.tasks.get(task_key) if job else None)

    def _submit(self, node, members: list, now: float, queued: bool = False) -> None:
        """Send ``members`` to ``node`` in one Dask task; ``queued``: to wait behind its busy slots,
        not started until one frees (queued.py)."""
        reqs, keys = [], []
        slots = members[0][1].spec.required_slots if len(members) == 1 else 1
        for job, tr in members:
            if queued:
                tr.dispatched = now
                reqs.append(self.carried_request(job, tr, None, node, slots))
                keys.append((job.key, tr.key, tr.n + 1))
                continue
            req = self.make_request(job, tr, node, now, slots / len(members))
            if req is None:
                continue
            req.job_prep = job.spec.prep is not None
            reqs.append(req)
            keys.append((job.key, tr.key, tr.n))
        if not reqs:
            return
        if len(reqs) < len(members):   # some could not go (a missing secret): the rest share the slot
            for req in reqs:
                self.batch.attempt(req.job_id, req.task_id, req.attempt, slots=slots / len(reqs))
        fn, args, keys = self.bundle_call(node, members, reqs, keys, slots, now)   # with the chains it carries
        key = f"bnb-{reqs[0].job_id}-{reqs[0].task_id}-{reqs[0].attempt}-{next(self._counter)}"
        fut = self.client.submit(_bundle.run_packed, _bundle.pack(fn, args), key=key, workers=[node.address],
                                 allow_other_workers=False, pure=False,
                                 resources={"slots": slots} if node.resources else None)
        self.inflight[key] = (fut, node.node_id, keys, slots)
        if queued:
            node.queued, self.queued_keys[key] = key, keys
            for _, tr in members:
                tr.queued = key
        else:
            self.nodes.take(node, key, slots, now)
        fut.add_done_callback(lambda f: self._q.put(("done", f)))
