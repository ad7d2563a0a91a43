"""Node health: replace unusable nodes, and drop removed nodes from the table.

The dispatcher marks a node ``unusable`` after ``batchnb.unusable-after``
consecutive failures that are not the tasks' own (crashes and lost nodes;
a staging failure counts against the task). Then this extension requeues whatever still runs there, asks the
backend for a fresh node of the same group in its place (when the backend
can scale and ``batchnb.replace-unusable`` is on) and lets the bad one go.
A node that the backend no longer holds leaves ``pool.nodes()`` once its
worker is gone.

Which failures count, and the settings (``dask.config``) that rule them:

>>> import dask.config
>>> from batchnb.node.runner import NOT_TASK_FAULT
>>> sorted(str(category) for category in NOT_TASK_FAULT)
['crash', 'node_lost']
>>> dask.config.get("batchnb.unusable-after"), dask.config.get("batchnb.replace-unusable")
(3, True)
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

    ``replaced`` lists ``(unusable node id, new node id)``: in a pool of
    ``dedicated-0`` and ``dedicated-1``, an unusable ``dedicated-1`` gives
    ``[("dedicated-1", "dedicated-2")]``.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=0) as pool:
    ...     pool.extension(NodeHealthExtension).replaced
    []
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
