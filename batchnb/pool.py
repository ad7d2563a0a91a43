"""``bnb.Pool``: nodes from a backend, one dispatcher, the jobs that run on them.

A pool checks what it is given before it starts any node:

>>> import batchnb as bnb
>>> bnb.Pool("doc", dedicated=-1)
Traceback (most recent call last):
...
batchnb.SpecError: dedicated: -1 is invalid: must be at least 0
"""

from __future__ import annotations

import atexit
import inspect
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import _config
from ._display import drawer
from .agent.access import PoolAccess
from .agent.client import client_class, connect as _connect
from .backends import get_backend
from .engine.auditops import AuditRecord, pool_audit, pool_close, pool_create, pool_job, pool_resize
from .engine.extension import EngineHandle, make_extensions
from .engine.dispatcher import Dispatcher
from .errors import BackendError, SpecError
from .engine.events import EventBus
from .engine.ledger import Ledger, default_ledger, owner_id
from .engine.nodes import natural_order
from .engine.taskstore import bound_message_logs
from .extensions.logs import check_logs_url
from .extensions.monitoring import PoolMonitoring
from .spec.model import JobSpec, PoolSpec
from .spec.validate import did_you_mean
from .node.container import check_runtime
from .states import NodeState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from datetime import timedelta
    from typing import Any, TypeVar

    from .autoscale import Metrics
    from .cost import Cost, PriceTable
    from .engine.extension import PoolExtension
    from .extensions.chaos import ChaosOptions, chaos_context
    from .job import Job
    from .schedule import Schedule
    from .spec.model import AppPackage, StartTask

    _Extension = TypeVar("_Extension", bound=PoolExtension)

log = logging.getLogger("batchnb.pool")
_open_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
@dataclass(frozen=True)
class NodeInfo:
    """A node as ``pool.nodes()`` shows it."""

    id: str
    group: str
    state: str
    running: tuple
    slots: int
    used_slots: int
    cpu: float | None = None
    memory: int | None = None


class Pool(PoolMonitoring, PoolAccess):
    """A pool of compute nodes: a Dask cluster driven the Azure Batch way.

    Parameters follow Azure Batch: ``dedicated`` and ``spot`` node counts
    (or an ``autoscale`` formula), ``task_slots_per_node``, ``node_fill``,
    a ``start_task``; ``storage_options`` (per fsspec protocol) reach every
    task's staging and are never recorded; ``spot_fallback=n`` runs a task
    preempted ``n`` times on dedicated nodes next. Other keyword arguments
    go to the backend. ``detached=True`` runs the pool in an agent process of
    its own: its jobs go on without this one (``bnb.Pool.connect``, ``bnb.pools()``).

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1, task_slots_per_node=2) as pool:
    ...     print([(n.id, n.state, n.slots) for n in pool.nodes()])
    ...     job = pool.job("hello")
    ...     t = job.add_task("t1", "echo hi")
    ...     print(job.wait())
    ...     print(t.stdout(), end="")
    [('dedicated-0', 'idle', 2)]
    job hello: all_tasks_complete in ...s (1 succeeded)
    hi
    """

    def __new__(cls, *args: Any, detached: bool = False, **kwargs: Any) -> Pool:
        # detached=True: the engine runs in an agent process (batchnb.agent); this object is its client.
        return super().__new__(client_class(cls) if detached else cls)

    connect = classmethod(_connect)

    @pool_create
    def __init__(self, name: str = "local", backend: str = "local", *, vm_size: str | None = None,
                 dedicated: int | None = None, spot: int = 0,
                 autoscale: str | Callable[[Metrics], Any] | None = None,
                 autoscale_interval: str | float | timedelta = "30s", task_slots_per_node: int = 1,
                 node_fill: str = "spread", start_task: StartTask | str | Sequence[str] | None = None,
                 app_packages: Iterable[AppPackage] = (),
                 price_table: PriceTable | Mapping[str, Mapping[str, float]] | str | Path | None = None,
                 storage_options: dict[str, dict[str, Any]] | None = None, tags: dict[str, str] | None = None,
                 region: str | None = None, ledger: Ledger | str | None = None, detached: bool = False,
                 chaos: dict[str, Any] | ChaosOptions | None = None, spot_fallback: int | None = None,
                 container_runtime: str | None = None, logs_url: str | None = None,
                 **backend_options: Any) -> None:
        self.spec = PoolSpec(name=name, backend=backend, vm_size=vm_size, dedicated=dedicated, spot=spot,
                             autoscale=autoscale, autoscale_interval=autoscale_interval,
                             task_slots_per_node=task_slots_per_node, node_fill=node_fill, start_task=start_task,
                             app_packages=app_packages, tags=tags or {}, region=region,
                             container_runtime=container_runtime)
        if backend == "local":  # its nodes run here: a runtime named but missing is refused now
            check_runtime(self.spec.container_runtime)
        _check_backend_options(backend, backend_options)
        if storage_options is not None and not isinstance(storage_options, dict):
            raise SpecError("storage_options", "<hidden>", "expected a mapping of protocol to options")
        self.name = self.spec.name
        if autoscale is not None:   # a bad formula fails here, before any node is started
            from .autoscale import make_policy
            make_policy(autoscale)
            if not get_backend(backend).can_scale:
                raise SpecError("autoscale", autoscale, f"backend {backend!r} cannot scale its nodes")
        from .extensions.chaos import ChaosOptions
        chaos_options = ChaosOptions.from_value(chaos)
        if chaos_options is not None:   # refused before any node (or VM) starts
            chaos_options.check_backend(get_backend(backend))
        from .engine.spotfallback import check_spot_fallback
        check_spot_fallback(spot_fallback)
        logs_url = check_logs_url(logs_url)     # before any node starts
        from .cost.prices import check_prices   # an unknown vm_size fails here, before any node starts
        prices = check_prices(price_table, self.spec)
        undo_warm_up = get_backend(backend).warm_up(self.spec, backend_options)     # nodes start booting now
        try:
            self.ledger = ledger if isinstance(ledger, Ledger) else (Ledger(ledger) if ledger else default_ledger())
        except BaseException:
            undo_warm_up()
            raise
        self.bus = EventBus()
        storage = {**(_config.get("storage-options") or {}), **(storage_options or {})}
        backend_obj = get_backend(backend)(self.spec, **backend_options)
        bound_message_logs()        # before the scheduler, the client and the nodes open their streams
        self.client = backend_obj.start()
        try:
            home = _config.home()
            # What the engine and the extensions know of this pool: they get this handle, never the Pool.
            self._engine = EngineHandle(
                name=self.name, spec=self.spec, ledger=self.ledger, bus=self.bus, client=self.client,
                backend=backend_obj, owner=owner_id(), lease_ttl=_config.seconds("lease-ttl"),
                node_root=backend_obj.node_root or str(home / "nodes" / self.name), storage_options=storage,
                results_url=_config.get("results-url") or Path(home / "results").as_uri(), price_table=prices,
                chaos_options=chaos_options, preempt=self.preempt, nodes=self.nodes)
            self._engine.spot_fallback = spot_fallback      # read by the dispatcher (engine/spotfallback.py)
            self._engine.logs_url = logs_url                # read by extensions/logs.py
            make_extensions(self._engine)
            from .node.reaper import TaskReaper
            # A name of this pool's own: registering a plugin under a name taken replaces the
            # old one, whose teardown would kill every task of the workers, another pool's on a
            # shared scheduler too.
            self.client.register_plugin(TaskReaper(), name=f"{TaskReaper.name}-{self._engine.owner}-{self.name}")
            self._engine.dispatcher = Dispatcher(self._engine, self.client, self.ledger, self.bus)
            self._engine.dispatcher.start()
            for ext in self._engine.extensions:
                ext.start()
        except BaseException:
            # Nothing may keep running behind a Pool(...) that raised.
            self.client.close()
            backend_obj.close()
            raise
        _open_pools.add(self)

    # -- the public surface ------------------------------------------------------
    @pool_job
    def job(self, job_id: str | JobSpec, **options: Any) -> Job:
        """Make a job, or re-attach to the one with this id (a re-run notebook resumes)."""
        from .cost.prices import check_job_tags
        from .extensions.billing import check_budget
        from .extensions.cost import CostExtension
        from .job import open_job
        check_job_tags(job_id, options)
        check_budget(self.extension(CostExtension), job_id, options)    # a budget needs prices
        return open_job(self, job_id, options)

    def schedule(self, name: str, spec_or_builder: Any = None, *, every: Any = None, cron: str | None = None,
                 do_not_run_until: Any = None, do_not_run_after: Any = None, start_window: Any = None,
                 max_active: int = 1) -> Schedule:
        """A job schedule (Azure's JobSchedule): a job per due run (:mod:`batchnb.schedule`)."""
        from .schedule import make_schedule
        return make_schedule(self, name, spec_or_builder, dict(locals()))

    def schedules(self) -> list[Schedule]:
        """This pool's job schedules, from the ledger."""
        from .schedule import pool_schedules
        return pool_schedules(self)

    def audit(self, since: Any = None, job: str | None = None, identity: str | None = None) -> list[AuditRecord]:
        """Who did what to this pool, its jobs and schedules, oldest first (:class:`bnb.AuditRecord`)."""
        return pool_audit(self, since, job, identity)

    def cost(self, now: float | None = None) -> Cost | None:
        """What the pool has cost so far (:class:`bnb.Cost`): nodes' time x price, per job, idle apart.

        None when the cost extension is not in ``batchnb.engine.extension.EXTENSIONS``."""
        from .extensions.cost import CostExtension
        ext = self.extension(CostExtension)
        return ext.cost(now) if ext is not None else None

    def _job_cost(self, job_id: str, now: float | None = None, detail: bool = True):
        from .extensions.cost import CostExtension
        ext = self.extension(CostExtension)
        return ext.job_cost(job_id, now, detail=detail) if ext is not None else None

    def nodes(self) -> list[NodeInfo]:
        """Every node with its group, state and running tasks."""
        def snapshot():
            out = []
            for n in self._dispatcher.nodes.nodes.values():
                running = tuple(t for key in n.running for t in self._dispatcher.task_ids(key))
                out.append(NodeInfo(n.node_id, n.group, n.state.value, running, n.slots, n.used, n.cpu, n.memory))
            return sorted(out, key=lambda i: (i.group, natural_order(i.id)))
        return self._dispatcher.call(snapshot)

    def preempt(self, node_id: str) -> None:
        """Do to a spot node what Azure does: the worker dies now, its tasks are requeued,
        the node is ``preempted`` and comes back after ``batchnb.preempt-return-after``."""
        if not self._backend.can_preempt:
            raise BackendError(f"backend {self._backend.name!r} cannot preempt nodes")
        if node_id not in self._backend.requested():
            raise SpecError("node_id", node_id, f"not a node of pool {self.name!r}")
        if not self._backend.preemptible(node_id):
            group = self._backend.group(node_id)
            raise SpecError("node_id", node_id, f"it is a {group} node; backend {self._backend.name!r} can preempt "
                            f"{', '.join(self._backend.preemptible_groups)} nodes only, as Azure evicts spot VMs only")
        def evict():
            # Requeue first, then kill, on the dispatcher's thread: no result of this node is
            # gathered from a dead worker in between (that would count as a failure), and no
            # requeued task starts elsewhere while its first process still runs. The kill is
            # bounded: a worker already dead would make it wait out Dask's connect timeout.
            node = self._dispatcher.nodes.nodes.get(node_id)
            address = node.address if node is not None else None
            self._dispatcher.node_lost(node_id, NodeState.PREEMPTED, "preempted")
            self._kill_task_processes([address] if address else [], deadline=_config.seconds("kill-timeout"))
        self._dispatcher.call(evict)
        self._backend.preempt(node_id)
        delay = _config.seconds("preempt-return-after")

        def back():
            if not self._closed:
                self._backend.restore(node_id)
        timer = threading.Timer(delay, back)
        timer.daemon = True
        timer.start()

    def evaluate_autoscale(self, formula: str | Callable[[Metrics], Any] | None = None) -> dict[str, Any]:
        """Evaluate an autoscale formula (or callable, or the pool's own policy) against the
        pool's live samples, as Azure's "evaluate autoscale"; nothing is applied.

        Returns every variable the formula set, with ``$TargetDedicatedNodes``,
        ``$TargetLowPriorityNodes`` and ``$NodeDeallocationOption``.
        """
        from .extensions.autoscale import AutoscaleExtension
        return self.extension(AutoscaleExtension).evaluate(formula)

    def chaos(self, **options: Any) -> chaos_context:
        """Spot evictions on purpose while inside ``with pool.chaos(preempt_rate=6):`` (see ``_chaos``)."""
        from .extensions.chaos import ChaosExtension, chaos_context
        return chaos_context(self.extension(ChaosExtension), options)

    @pool_resize
    def resize(self, dedicated: int | None = None, spot: int | None = None) -> None:
        """Set the number of nodes per group (what a fixed-size Azure pool's resize does)."""
        for group, count in (("dedicated", dedicated), ("spot", spot)):
            if count is None:
                continue
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SpecError(group, count, "expected a whole number of nodes, 0 or more")
            if self.spec.autoscale is not None:
                raise SpecError("resize", {group: count}, "the pool autoscales; change its formula instead "
                                "(Azure refuses a resize of an autoscaling pool too)")
            self._scale_group(group, count)

    @pool_close
    def close(self) -> None:
        """Stop dispatching, end the nodes, release the jobs' leases."""
        if self._closed:
            return
        self._engine.closed = True
        for ext in reversed(self._engine.extensions):
            ext.stop()
        try:
            # The dispatcher stops first, so that the tasks killed next stay 'running' in the
            # ledger (a resume runs them again) instead of being recorded as failures; and
            # its lease renewals stop before the leases are released.
            running = self._dispatcher.call(self._dispatcher.running_attempts)
            self._dispatcher.close()
            for address, keys in running.items():   # only this pool's: a scheduler may be shared
                self._kill_task_processes([address], keys)
            # Jobs' release tasks run before the nodes go (those of jobs still active too).
            self._dispatcher.preps.close()
            for job in list(self._dispatcher.jobs.values()):
                self.ledger.release_lease(job.spec.id, self._owner)
        finally:
            try:
                self._close_client()
            finally:
                try:
                    self._backend.close()
                finally:
                    # Views show their last state and let go of the pool; the bus's thread ends.
                    self.bus.close()
                    _open_pools.discard(self)

    def _close_client(self) -> None:
        # A scheduler busy with other clients' work (thousands of raw futures being released)
        # may not answer in time: the pool still closes its nodes, with a word, not a Dask traceback.
        try:
            self.client.close(timeout=10)
        except (TimeoutError, OSError) as exc:
            log.warning("pool %s: the Dask client did not close in 10 s (%s); closing the nodes anyway",
                        self.name, exc)

    def _kill_task_processes(self, addresses: list | None, keys: list | None = None,
                             deadline: float | None = None) -> None:
        """Task processes run in sessions of their own, so a worker's death would not end them.

        With ``keys``, only those attempts (this pool's own: on a shared scheduler other
        drivers' tasks run on the same workers); else every task process of the workers.
        With ``deadline``, give up waiting after that many seconds (the kill goes on).
        """
        from .node import runner
        if addresses == [] or keys == []:
            return

        def kill():
            try:
                if keys is None:
                    self.client.run(runner.kill_all, workers=addresses)
                else:
                    self.client.run(runner.kill_attempts, keys, workers=addresses)
            except Exception as exc:  # noqa: BLE001 - a worker already gone took its processes' parent along
                log.debug("could not reach workers to kill task processes: %s", exc)
        if deadline is None:
            kill()
            return
        worker = threading.Thread(target=kill, name=f"batchnb-kill-{self.name}", daemon=True)
        worker.start()
        worker.join(deadline)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self._backend.requested())} nodes"
        return f"<batchnb.Pool {self.name!r} backend={self.spec.backend!r} {state}>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        return drawer("pool_bundle")(self)

    def view(self, what: str = "nodes", job: Job | None = None) -> Any:
        """A live view of the pool: ``"nodes"`` (PoolView) or ``"cost"`` (CostView, of ``job`` if given)."""
        if what == "nodes":
            return drawer("PoolView")(self)
        if what == "cost":
            return drawer("CostView")(self, job=job)
        raise SpecError("what", what, "expected 'nodes' or 'cost'")

    def extension(self, cls: type[_Extension]) -> _Extension | None:
        """The pool's extension of class ``cls`` (or None)."""
        return self._engine.extension(cls)

    def _scale_group(self, group: str, count: int) -> None:
        """Grow or shrink a group on the dispatcher's thread: idle nodes leave first, and the
        tasks of a node that leaves are requeued (not counted as crashes) before it goes."""
        from .extensions.autoscale import AutoscaleExtension
        from .engine.events import PoolTargets
        ext = self.extension(AutoscaleExtension)

        def resize():
            now = time.time()
            ext.resize(group, count, "requeue", now)
            current = {"dedicated": 0, "spot": 0}
            for g in self._backend.requested().values():
                current[g] = current.get(g, 0) + 1
            current[group] = count
            self._dispatcher.events.append(PoolTargets(self.name, now, current["dedicated"], current["spot"],
                                                       "resize"))
        self._dispatcher.call(resize, timeout=None)

    # -- the engine's parts, for this module and the tests ---------------------------
    @property
    def _dispatcher(self):
        return self._engine.dispatcher

    @property
    def _backend(self):
        return self._engine.backend

    @property
    def _closed(self) -> bool:
        return self._engine.closed

    @property
    def _owner(self) -> str:
        return self._engine.owner

    @property
    def _lease_ttl(self) -> float:
        return self._engine.lease_ttl

    @property
    def _node_root(self) -> str:
        return self._engine.node_root


def _check_backend_options(backend: str, options: dict) -> None:
    """A keyword neither the Pool nor its backend takes is refused before any node starts,
    naming the one it most likely misspells (a Pool parameter or a backend option)."""
    allowed = get_backend(backend).option_names()
    if allowed is None:
        return
    own = [n for n in inspect.signature(Pool.__init__).parameters if n not in ("self", "backend_options")]
    for name in options:
        if name not in allowed:
            near = did_you_mean(name, (*own, *allowed))
            hint = f"did you mean {near!r}?" if near else \
                f"the {backend!r} backend takes {', '.join(sorted(allowed)) or 'no options'}"
            # The value is not shown: a misspelt keyword may well carry a credential.
            raise SpecError(name, None, hint, message=f"{name}: not a keyword of bnb.Pool nor an option of "
                                                      f"the {backend!r} backend; {hint}")


@atexit.register
def _close_all() -> None:
    for pool in list(_open_pools):
        try:
            pool.close()
        except Exception:  # noqa: BLE001 - the interpreter is going away
            pass
