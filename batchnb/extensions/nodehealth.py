"""Node health: replace unusable nodes, and drop removed nodes from the table.

The dispatcher marks a node ``unusable`` after ``batchnb.unusable-after``
consecutive failures that are not the tasks' own (staging, crash, lost
node). Then this extension requeues whatever still runs there, asks the
backend for a fresh node of the same group in its place (when the backend
can scale and ``batchnb.replace-unusable`` is on) and lets the bad one go.
A node that the backend no longer holds leaves ``pool.nodes()`` once its
worker is gone.

>>> # pool.extension(NodeHealthExtension).replaced   # [(old id, new id), ...]
"""

from __future__ import annotations

import logging

from .. import _config
from ..engine.extension import PoolExtension
from ..errors import BatchError
from ..states import NodeState

log = logging.getLogger("batchnb.nodes")


class NodeHealthExtension(PoolExtension):
    """Replaces unusable nodes; forgets nodes the backend released.

    >>> # bnb.Pool("local", dedicated=2)  # an unusable node is replaced by dedicated-2
    """

    def __init__(self, engine):
        super().__init__(engine)
        #: (unusable node id, new node id or None)
        self.replaced: list[tuple[str, str | None]] = []

    def node_unusable(self, node_id: str) -> None:
        engine = self.engine
        disp = engine.dispatcher
        backend = engine.backend
        if not (_config.get("replace-unusable") and backend.can_scale):
            return  # stays unusable, as in Azure, until someone removes it
        disp.requeue_node(node_id, f"node {node_id} is unusable")
        try:
            new = backend.replace(node_id)
        except BatchError as exc:
            log.warning("pool %s: cannot replace unusable node %s: %s", engine.name, node_id, exc)
            return
        self.replaced.append((node_id, new))
        log.warning("pool %s: node %s is unusable; replaced by %s", engine.name, node_id, new)

    def node_changed(self, node, now: float) -> None:
        if node.state == NodeState.OFFLINE and node.address is None \
                and node.node_id not in self.engine.backend.requested():
            self.engine.dispatcher.forget_node(node.node_id)
