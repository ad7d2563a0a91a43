"""The dispatcher's view of the nodes: slots, state, and where a task goes.

Placement is ours, not Dask's: the dispatcher picks the node (``spread``: the
one with the most free slots; ``pack``: the fullest that still fits) and
pins the Dask task to it, so task slots, unusable nodes and nodes being
drained are honoured exactly. Pure: no Dask, no I/O.

>>> t = NodeTable(fill="pack")
>>> _ = t.up("dedicated-0", "tcp://a", "dedicated", slots=2, now=0.0)
>>> _ = t.up("dedicated-1", "tcp://b", "dedicated", slots=2, now=0.0)
>>> t.place(1).node_id
'dedicated-0'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..states import SCHEDULABLE_NODE_STATES, NodeState


@dataclass
class Node:
    node_id: str
    address: str | None
    group: str
    slots: int
    state: NodeState = NodeState.STARTING
    used: int = 0
    running: set = field(default_factory=set)     # (job_key, task_key) pairs
    infra_failures: int = 0                       # consecutive failures not of the tasks' making
    since: float = 0.0
    last_used: float = 0.0
    cpu: float | None = None
    memory: int | None = None
    draining: bool = False                        # taskcompletion: no new tasks, then removed
    resources: bool = True                        # the worker advertises the "slots" resource
    gone: str | None = None                       # the address it had when lost: a dead worker the
                                                  # scheduler still lists must not rejoin under it
    queued: str | None = None                     # a bundle sent ahead, waiting behind its busy slots

    @property
    def free(self) -> int:
        return self.slots - self.used if self.schedulable else 0

    @property
    def may_queue(self) -> bool:
        """Whether a bundle may be sent ahead to wait behind this node's slots: all busy, none queued."""
        return self.schedulable and self.queued is None and self.slots > 0 and self.used >= self.slots

    @property
    def schedulable(self) -> bool:
        return self.state in SCHEDULABLE_NODE_STATES and not self.draining and self.address is not None


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
    status: str = "running"         # the scheduler's word for the worker (distributed's ``Status``)

    @property
    def leaving(self) -> bool:
        """Whether the worker is on its way out (retired or closing): no node to take in."""
        return self.status in _LEAVING_STATUSES


_LEAVING_STATUSES = frozenset({"closing_gracefully", "closing", "closed", "failed"})


class NodeTable:
    def __init__(self, fill: str = "spread"):
        self.fill = fill
        self.nodes: dict[str, Node] = {}
        self.by_address: dict[str, str] = {}
        #: node ids a waiting multi-instance task claims: no new task is placed there meanwhile
        self.held: set[str] = set()

    def up(self, node_id: str, address: str, group: str, slots: int, now: float,
           ready: bool = True) -> Node:
        """A worker joined (or re-joined after preemption)."""
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = Node(node_id, address, group, slots, since=now)
        if node.address and node.address != address:
            self.by_address.pop(node.address, None)
        node.address, node.group, node.slots = address, group, slots
        # A preempted spot node comes back as a new machine with a clean record; a node whose
        # worker died and restarted is the same machine: its failures still count, and an
        # unusable one stays unusable (node health replaces it).
        if node.state == NodeState.PREEMPTED:
            node.infra_failures = 0
        node.used, node.running, node.draining, node.queued = 0, set(), False, None
        if node.state != NodeState.UNUSABLE:
            node.state = NodeState.IDLE if ready else NodeState.STARTING
        node.since = now
        self.by_address[address] = node_id
        return node

    def set_state(self, node_id: str, state: NodeState, now: float) -> Node | None:
        node = self.nodes.get(node_id)
        if node is None or node.state == state:
            return None
        node.state, node.since = state, now
        return node

    def lost(self, node_id: str, state: NodeState, now: float) -> Node | None:
        """The worker is gone; its address is forgotten and its slots freed."""
        node = self.nodes.get(node_id)
        if node is None:
            return None
        if node.address:
            self.by_address.pop(node.address, None)
            node.gone = node.address
        node.address, node.used, node.queued = None, 0, None
        node.state, node.since = state, now
        return node

    def place(self, slots: int, group: str | None = None) -> Node | None:
        """The node for a task of ``slots`` slots (in ``group``, if given), or None if none has room."""
        best = None
        for node in self.nodes.values():
            if node.free < slots or (group is not None and node.group != group) or node.node_id in self.held:
                continue
            if best is None:
                best = node
            elif self.fill == "spread":
                if (node.free, -node.last_used) > (best.free, -best.last_used):
                    best = node
            elif node.free < best.free:
                best = node
        return best

    def take(self, node: Node, key, slots: int, now: float) -> None:
        node.used += slots
        node.running.add(key)
        node.last_used = now
        if node.state == NodeState.IDLE:
            node.state, node.since = NodeState.RUNNING, now

    def give_back(self, node_id: str, key, slots: int, now: float) -> Node | None:
        node = self.nodes.get(node_id)
        if node is not None and node.queued == key:
            node.queued = None          # it never held a slot
        if node is None or key not in node.running:
            return None
        node.running.discard(key)
        node.used = max(0, node.used - slots)
        if node.state == NodeState.RUNNING and not node.running:
            node.state, node.since = NodeState.IDLE, now
        return node

    def total_slots(self) -> int:
        return sum(n.slots for n in self.nodes.values() if n.schedulable)

    def free_slots(self) -> int:
        return sum(n.free for n in self.nodes.values())


def natural_order(node_id: str) -> tuple:
    """A sort key that puts ``dedicated-2`` before ``dedicated-10``."""
    head, _, tail = node_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (node_id, 0)
