"""What a way of getting nodes must do.

A backend gives a Dask scheduler with workers named by node id
(``dedicated-0``, ``spot-3``...), grows and shrinks each node group on
request, and, where the platform can, takes a node away at once as a spot
eviction does. The pool and the dispatcher do everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import PoolSpec

GROUPS = ("dedicated", "spot")


@dataclass(frozen=True)
class WorkerInfo:
    """A worker the scheduler knows: the node behind it."""

    name: str
    address: str
    group: str
    slots: int
    has_slots_resource: bool
    cpu: float | None = None
    memory: int | None = None


def group_of(name: str) -> str:
    """The node group from a worker's name (``spot-*`` is spot; anything else dedicated)."""
    return "spot" if str(name).startswith("spot") else "dedicated"


class Backend:
    """Base class of the backends; see ``local.py`` for a whole one.

    Subclasses set ``can_scale`` and ``can_preempt`` and override what they
    can do; the rest raises :class:`~batchnb.errors.BackendError` naming
    the backend.
    """

    name = "base"
    can_scale = False
    can_preempt = False
    #: where nodes keep their working directories (None: the pool's home)
    node_root: str | None = None

    def __init__(self, spec: PoolSpec, **options):
        self.spec = spec
        self.options = options

    def start(self):
        """Start the initial nodes; return a ``distributed.Client``."""
        raise NotImplementedError

    def requested(self) -> dict[str, str]:
        """Nodes asked for and not yet released: node id -> group."""
        return {}

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
        """Whether ``preempt(node_id)`` can act on this node (Azure evicts spot VMs only)."""
        return self.can_preempt and node_id in self.requested()

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
