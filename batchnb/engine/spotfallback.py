"""Spot fallback: a task preempted ``n`` times runs on a dedicated node next.

``bnb.Pool(..., spot_fallback=n)``. A spot eviction requeues a task without
spending a retry, as in Azure; a task unlucky enough to be evicted again and
again would never finish on spot nodes, so after its ``n``-th preemption
(``pool.preempt``, a chaos eviction or an eviction notice) the dispatcher
places it on dedicated nodes only. Other requeues (a node removed by a
resize, an unusable node, a crashed worker) do not count, and nothing here
touches the retry count. While the pool has no dedicated node at all (none
up nor asked for), such a task runs where it can rather than wait for ever.

The count belongs to the driver that saw the preemptions: a job resumed in
another process counts afresh.

>>> check_spot_fallback(2)
2
>>> check_spot_fallback(-1)
Traceback (most recent call last):
...
batchnb.SpecError: spot_fallback: -1 is invalid: expected a whole number of preemptions, 0 or more (None: never fall back)
"""

from __future__ import annotations

import logging

from ..errors import SpecError
from ..states import NodeGroup, NodeState

log = logging.getLogger("batchnb.dispatch")

_DEDICATED = NodeGroup.DEDICATED.value


def check_spot_fallback(value):
    """``value`` if it is a valid ``spot_fallback`` (None or a whole number, 0 or more); else SpecError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError("spot_fallback", value, "expected a whole number of preemptions, 0 or more "
                                                "(None: never fall back)")
    return value


class SpotFallback:
    """The preemption counts of a dispatcher's tasks, and the node group they must run in.

    >>> fb = SpotFallback(1)
    >>> fb.due(("j", "t"))
    False
    >>> fb.preempted(("j", "t"))
    >>> fb.due(("j", "t")), SpotFallback(None).due(("j", "t")), SpotFallback(0).due(("j", "u"))
    (True, False, True)
    """

    def __init__(self, after: int | None):
        self.after = check_spot_fallback(after)
        self.counts: dict[tuple[str, str], int] = {}    # (job key, task key) -> preemptions; preempted tasks only

    def preempted(self, key: tuple[str, str]) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.after is not None and self.counts[key] == self.after:
            log.info("task %s of job %s was preempted %d time(s): it runs on dedicated nodes from now on "
                     "(spot_fallback=%d)", key[1], key[0], self.counts[key], self.after)

    def due(self, key: tuple[str, str]) -> bool:
        """Whether the task must run on a dedicated node (where the pool has one)."""
        return self.after is not None and self.counts.get(key, 0) >= self.after


def has_dedicated(nodes, requested: dict) -> bool:
    """Whether the pool has a dedicated node that is up or on its way (``nodes``: the node table's)."""
    return any(g == _DEDICATED for g in requested.values()) or any(
        n.group == _DEDICATED and n.state != NodeState.UNUSABLE and n.address is not None for n in nodes)
