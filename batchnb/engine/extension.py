"""The extension API: the engine handle, and the pool extensions that get it.

A :class:`Pool <batchnb.pool.Pool>` (a layer above) builds one
:class:`EngineHandle` and hands it down: the dispatcher reads the pool's
settings and asks for its workers through it, and every extension gets it
instead of the Pool, so neither reaches into the Pool's privates. The
dispatcher calls the handle's hooks; the handle passes each call to the
extensions in order. Cost metering, autoscale and start tasks are each one
extension in a module of their own (:mod:`batchnb.extensions`), so the
engine stays small and each feature is tested on its own. An extension is
listed in :data:`EXTENSIONS` by dotted path and made with the pool.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .nodes import WorkerInfo

#: Extensions every pool gets, in the order their hooks run.
EXTENSIONS: list[str] = [
    "batchnb.extensions.starttask.StartTaskExtension",
    "batchnb.extensions.nodehealth.NodeHealthExtension",
    "batchnb.extensions.autoscale.AutoscaleExtension",
    "batchnb.extensions.chaos.ChaosExtension",
    "batchnb.extensions.spotnotice.SpotNoticeExtension",
    "batchnb.extensions.cost.CostExtension",
    "batchnb.extensions.retention.RetentionExtension",
    "batchnb.extensions.metrics.MetricsExtension",
    "batchnb.extensions.alerts.AlertsExtension",
    "batchnb.extensions.logs.LogsExtension",
    "batchnb.extensions.schedules.SchedulesExtension",
]


class EngineHandle:
    """What the engine and the extensions know of the pool they serve.

    Settings (``name``, ``spec``, ``owner``, ``lease_ttl``, ``node_root``,
    ``storage_options``, ``results_url``, ``price_table``), the shared parts
    (``ledger``, ``bus``, ``client``, ``backend``), the ``dispatcher`` once it
    runs, and two of the pool's own acts that extensions may take
    (``preempt(node_id)`` and ``nodes()``). The hooks below fan out to the
    extensions, in the order of :data:`EXTENSIONS`.
    """

    def __init__(self, *, name: str, spec, ledger, bus, client, backend, owner: str, lease_ttl: float,
                 node_root: str, storage_options: dict, results_url: str, price_table=None,
                 chaos_options=None, preempt: Callable[[str], None] | None = None,
                 nodes: Callable[[], list] | None = None):
        self.name, self.spec, self.ledger, self.bus, self.client, self.backend = name, spec, ledger, bus, client, backend
        self.owner, self.lease_ttl = owner, lease_ttl
        self.node_root, self.storage_options, self.results_url = node_root, storage_options, results_url
        self.price_table, self.chaos_options = price_table, chaos_options
        self._preempt, self._nodes = preempt, nodes
        self.dispatcher: Any = None
        self.extensions: list[PoolExtension] = []
        self.closed = False

    @property
    def extensions(self) -> list:
        return self._extensions

    @extensions.setter
    def extensions(self, extensions: list) -> None:
        # The per-task hooks go only to the extensions that have them: most do not, and
        # calling each extension's empty hook twice a task was a tenth of what a tiny task cost.
        self._extensions = list(extensions)
        self._hooked = {hook: [getattr(ext, hook) for ext in self._extensions if _has_hook(ext, hook)]
                        for hook in ("task_started", "task_ended", "may_dispatch")}

    # -- what the dispatcher asks ------------------------------------------------
    def scheduler_workers(self) -> dict:
        """The scheduler's workers by address, asked of the scheduler itself.

        Not ``client.scheduler_info()``: the client's periodic refresh (which carries no
        workers) can overwrite its cached answer between the fetch and the read (1 in ~2,500
        calls), and a live node would then look lost."""
        return self.client.sync(self.client.scheduler.identity, n_workers=-1).get("workers", {})

    def workers(self) -> list[WorkerInfo]:
        """The workers the scheduler knows now, each with its slots and the node group
        its backend declares (``backend.group``; never read from the worker's name)."""
        out = []
        for address, w in self.scheduler_workers().items():
            resources = w.get("resources") or {}
            metrics = w.get("metrics") or {}
            name = str(w.get("name", address))
            out.append(WorkerInfo(name, address, self.backend.group(name),
                                  int(resources.get("slots", w.get("nthreads", 1))), "slots" in resources,
                                  metrics.get("cpu"), metrics.get("memory"), str(w.get("status", "running"))))
        return out

    def requested(self) -> dict[str, str]:
        """Node id -> group of every node the backend was asked for."""
        return self.backend.requested()

    def preempt(self, node_id: str) -> None:
        self._preempt(node_id)

    def nodes(self) -> list:
        return self._nodes()

    def extension(self, cls):
        """The extension of class ``cls`` (or None)."""
        return next((e for e in self.extensions if isinstance(e, cls)), None)

    # -- hooks: the dispatcher calls these on its thread; extensions do the work --
    def node_joined(self, worker: WorkerInfo, now: float) -> bool:
        """A worker appeared; True when it may take tasks at once."""
        return all([ext.node_joined(worker, now) for ext in self.extensions])

    def node_changed(self, node, now: float) -> None:
        for ext in self.extensions:
            ext.node_changed(node, now)

    def node_unusable(self, node_id: str) -> None:
        for ext in self.extensions:
            ext.node_unusable(node_id)

    def task_started(self, job, tr, node, now: float) -> None:
        for hook in self._hooked["task_started"]:
            hook(job, tr, node, now)

    def task_ended(self, job, tr, now: float) -> None:
        for hook in self._hooked["task_ended"]:
            hook(job, tr, now)

    def may_dispatch(self, job, tr, now: float) -> bool:
        for hook in self._hooked["may_dispatch"]:
            if not hook(job, tr, now):
                return False
        return True

    def job_ended(self, job, now: float) -> None:
        for ext in self.extensions:
            ext.job_ended(job, now)

    def keeps_alive(self) -> bool:
        """Some extension has work to come (an active job schedule): a detached agent stays up."""
        return any(ext.keeps_alive() for ext in self.extensions)


class PoolExtension:
    """Base class: every hook does nothing. ``self.engine`` is the pool's :class:`EngineHandle`."""

    def __init__(self, engine: EngineHandle):
        self.engine = engine

    def start(self) -> None:
        """The pool's dispatcher runs; start timers or threads here."""

    def stop(self) -> None:
        """The pool is closing."""

    def node_joined(self, worker, now: float) -> bool:
        """A worker appeared. Return False to keep it ``starting`` (e.g. a start task runs)."""
        return True

    def node_changed(self, node, now: float) -> None:
        """A node's state changed (on the dispatcher's thread)."""

    def node_unusable(self, node_id: str) -> None:
        """A node became unusable; replace it if the backend can."""

    def task_started(self, job, tr, node, now: float) -> None:
        """An attempt was dispatched to ``node``."""

    def task_ended(self, job, tr, now: float) -> None:
        """An attempt ended, was requeued or was terminated."""

    def may_dispatch(self, job, tr, now: float) -> bool:
        """False holds the task back (e.g. the job's budget is spent)."""
        return True

    def job_ended(self, job, now: float) -> None:
        """The job completed (any reason)."""

    def keeps_alive(self) -> bool:
        """True while the extension has work to come with no job running (e.g. an active schedule)."""
        return False


def _has_hook(ext: PoolExtension, hook: str) -> bool:
    """Whether ``ext`` does something on ``hook`` (its class, or the instance itself, overrides it)."""
    return hook in vars(ext) or getattr(type(ext), hook) is not getattr(PoolExtension, hook)


def make_extensions(engine: EngineHandle) -> list[PoolExtension]:
    """Make the extensions of :data:`EXTENSIONS` for ``engine`` (and keep them on it)."""
    out = []
    for path in EXTENSIONS:
        module, _, name = path.rpartition(".")
        out.append(getattr(importlib.import_module(module), name)(engine))
    engine.extensions = out
    return out
