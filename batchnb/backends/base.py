"""What a way of getting nodes must do.

A backend gives a Dask scheduler whose workers are named by node id, says
which group (``dedicated`` or ``spot``) each node is in (:meth:`Backend.group`;
the engine asks it, and node names carry no meaning), grows and shrinks each
node group on request, and, where the platform can, takes a node away at once
as a spot eviction does. The pool and the dispatcher do everything else.
:mod:`batchnb.backends.testing` checks all of it through a real pool.
"""

from __future__ import annotations

import inspect
import time

from ..engine.nodes import WorkerInfo  # noqa: F401 - what a backend reports of each worker
from ..spec.model import PoolSpec
from ..states import NodeGroup

GROUPS = tuple(g.value for g in NodeGroup)      # ("dedicated", "spot")


def _nothing() -> None:
    pass


class Backend:
    """Base class of the backends; see ``local.py`` for a whole one.

    Subclasses set ``can_scale`` and ``can_preempt`` and override what they
    can do; the rest raises :class:`~batchnb.errors.BackendError` naming
    the backend.
    """

    name = "base"
    can_scale = False
    can_preempt = False
    #: the node groups ``preempt`` acts on: Azure evicts spot VMs only, and a local pool
    #: that preempted dedicated nodes would teach a plan that Azure then refuses
    preemptible_groups: tuple[str, ...] = (NodeGroup.SPOT.value,)
    #: where nodes keep their working directories (None: the pool's home)
    node_root: str | None = None

    def __init__(self, spec: PoolSpec, **options):
        self.spec = spec
        self.options = options

    @classmethod
    def option_names(cls) -> frozenset[str] | None:
        """The keyword options of ``bnb.Pool(...)`` this backend takes; None when it takes any.

        ``bnb.Pool`` checks its keyword arguments against these before anything
        starts, so a misspelt one is a SpecError with a "did you mean", not a
        failure of the backend. By default they are the named keyword parameters
        of the ``__init__`` methods along the class's MRO (how the local, address
        and azure backends declare theirs); a backend that keeps options it does
        not name, in ``self.options``, overrides this to return None (as a
        backend that keeps the base's ``__init__`` does).
        """
        if cls.__init__ in (Backend.__init__, SpecClusterBackend.__init__):
            return None
        names: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            params = list(inspect.signature(init).parameters.values())[2:]     # self, spec
            names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        return frozenset(names)

    @classmethod
    def warm_up(cls, spec: PoolSpec, options: dict):
        """Begin, before the pool opens its ledger and imports Dask, what :meth:`start` will wait for.

        Called by the pool once its arguments are checked; returns what undoes it if the
        pool fails before its backend starts. The local backend starts its node launcher
        here. By default nothing.
        """
        return _nothing

    def start(self):
        """Start the initial nodes; return a ``distributed.Client``."""
        raise NotImplementedError

    def while_nodes_start(self) -> None:
        """What :meth:`start` calls once it asked for its first nodes, while they boot.

        The pool's own start then overlaps theirs: here, its extensions are
        imported (on this core, while the nodes boot on others), which it would
        otherwise do only once every node had joined. Never raises: an import
        that fails fails again where the pool makes its extensions.
        """
        import importlib
        from ..engine.extension import EXTENSIONS
        for path in EXTENSIONS:
            try:
                importlib.import_module(path.rpartition(".")[0])
            except Exception:  # noqa: BLE001 - reported by make_extensions, with the pool's context
                return

    def requested(self) -> dict[str, str]:
        """Nodes asked for and not yet released: node id -> group."""
        return {}

    def requested_at(self, node_id: str) -> float | None:
        """When ``node_id`` was last asked for (``time.time()``), or None when not known.

        The cloud bills a node from then, not from when its worker joins: the
        cost meter starts the node's bill here (its first request, or the one
        that brought a preempted node back).
        """
        return None

    def scheduler_vm_size(self) -> str | None:
        """The VM size of the pool's Dask scheduler when it runs on a billed VM of its own.

        The cost meter bills it at that size's dedicated price for the pool's
        life (from :attr:`started_at`), apart from the nodes; None (the
        default) when the scheduler runs on this machine or is not the pool's.
        """
        return None

    #: when :meth:`start` began (``time.time()``), for backends whose start bills (a scheduler VM)
    started_at: float | None = None

    def group(self, node_id: str) -> str:
        """The group of node ``node_id``: ``"dedicated"`` or ``"spot"``.

        The engine asks this of every worker it sees; the answer goes to the
        node table, the views, the cost meter and the task's
        ``AZ_BATCH_NODE_IS_DEDICATED``. It is what the node was asked for
        (:meth:`requested`), never guessed from its name; a node this backend
        does not list is dedicated. Override it where nodes come from
        elsewhere (see the address backend).
        """
        return self.requested().get(node_id, NodeGroup.DEDICATED.value)

    def released(self, node_id: str) -> bool:
        """Whether ``node_id`` was asked for and then let go. Its worker may still join or be
        listed by the scheduler for a moment (it was starting, or is closing); the pool must
        not take it back as a new node. False for a node this backend never asked for."""
        return False

    def planned_loss(self, node_id: str) -> str | None:
        """Why ``node_id``'s worker left, when the backend planned it (a batch job's walltime); else None.

        The pool requeues the node's tasks either way (a requeue is never a
        retry); a planned loss does not count against the node's health, and
        the pool shows this reason. The backend replaces such a node itself
        while the pool's target still wants it.
        """
        return None

    def notice_plugins(self) -> list:
        """Worker plugins that announce a node's coming preemption, registered by the pool.

        Each publishes ``{"node_id", "event_type", ...}`` on the
        :data:`batchnb.node.spotnotice.TOPIC` topic when the backend's platform
        says a node is about to be taken (Azure's scheduled events); the pool
        then requeues that node's tasks while it is still up. None by default.
        """
        return []

    def scale(self, group: str, count: int) -> list[str]:
        """Make ``group`` have ``count`` nodes; return the ids of new nodes."""
        from ..errors import BackendError
        raise BackendError(f"backend {self.name!r} cannot scale its nodes")

    def remove(self, node_ids: list[str]) -> None:
        """Release these nodes (after the pool drained or requeued them)."""
        from ..errors import BackendError
        raise BackendError(f"backend {self.name!r} cannot remove nodes")

    def replace(self, node_id: str) -> str | None:
        """Release ``node_id`` and ask for a fresh node of its group in its place; return the new id."""
        group = self.requested().get(node_id)
        if group is None:
            return None
        count = sum(1 for g in self.requested().values() if g == group)
        self.remove([node_id])
        added = self.scale(group, count)
        return added[0] if added else None

    def preemptible(self, node_id: str) -> bool:
        """Whether ``preempt(node_id)`` can act on this node: one of ``preemptible_groups``
        (Azure evicts spot VMs only)."""
        group = self.requested().get(node_id)
        return self.can_preempt and group is not None and group in self.preemptible_groups

    def preempt(self, node_id: str) -> None:
        """Take a node away at once, as a spot eviction does."""
        from ..errors import BackendError
        raise BackendError(f"backend {self.name!r} cannot preempt nodes")

    def restore(self, node_id: str) -> None:
        """Bring a preempted node back."""
        from ..errors import BackendError
        raise BackendError(f"backend {self.name!r} cannot restore nodes")

    def close(self) -> None:
        pass


class SpecClusterBackend(Backend):
    """A backend whose nodes are entries of a ``distributed`` SpecCluster's
    ``worker_spec``, keyed by node id (the local and Azure backends).

    Subclasses make ``self.cluster`` in ``start`` and say what one node's
    worker spec is in :meth:`_worker_spec` (and, if they like, how a new
    node is named, in :meth:`_new_id`); growing, shrinking, the record of
    what was requested and each node's group are shared here.
    """

    can_scale = True

    def __init__(self, spec: PoolSpec, **options):
        import itertools
        import threading
        super().__init__(spec, **options)
        self._counters = {g: itertools.count() for g in GROUPS}
        self._lock = threading.Lock()
        self._nodes: dict[str, str] = {}          # node id -> group, as requested
        # node id -> group of every node ever asked for: a released node's worker may still be
        # listed by the scheduler for a moment, and must not change group meanwhile.
        self._groups: dict[str, str] = {}
        self._asked: dict[str, float] = {}       # node id -> when it was last asked for
        self.cluster = None

    def _worker_spec(self, group: str, node_id: str) -> dict:
        raise NotImplementedError

    def requested(self) -> dict[str, str]:
        with self._lock:
            return dict(self._nodes)

    def group(self, node_id: str) -> str:
        with self._lock:
            return self._groups.get(node_id, NodeGroup.DEDICATED.value)

    def requested_at(self, node_id: str) -> float | None:
        with self._lock:
            return self._asked.get(node_id)

    def released(self, node_id: str) -> bool:
        with self._lock:
            return node_id in self._groups and node_id not in self._nodes

    def _new_id(self, group: str) -> str:
        """The id of a new node of ``group`` (Azure Batch's style; any unique name will do)."""
        return f"{group}-{next(self._counters[group])}"

    def _add(self, group: str, node_id: str | None = None) -> str:
        node_id = node_id or self._new_id(group)
        with self._lock:
            self.cluster.worker_spec[node_id] = self._worker_spec(group, node_id)
            self._nodes[node_id] = group
            self._groups[node_id] = group
            self._asked[node_id] = time.time()
        return node_id

    def _apply(self, wait: bool = False) -> None:
        """Make the cluster match its worker specs (at once, or soon from its event loop)."""
        if wait:
            self.cluster.sync(self.cluster._correct_state)
        else:
            self.cluster.loop.add_callback(self.cluster._correct_state)

    def scale(self, group: str, count: int) -> list[str]:
        with self._lock:
            have = [n for n, g in self._nodes.items() if g == group]
        added = [self._add(group) for _ in range(count - len(have))]
        if count < len(have):
            self.remove(have[count:][::-1])
        elif added:
            self._apply()
        return added

    def remove(self, node_ids: list[str]) -> None:
        with self._lock:
            for node_id in node_ids:
                self._nodes.pop(node_id, None)
                self.cluster.worker_spec.pop(node_id, None)
        self._apply()       # the cluster retires the workers (and, on a cloud, deletes their VMs)
