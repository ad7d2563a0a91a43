"""Spot eviction notices on the pool's side: a notice from a node becomes a graceful requeue.

:class:`SpotNoticeExtension` hears the notices that
:class:`batchnb.node.spotnotice.ScheduledEventsPlugin` publishes and does
what ``pool.preempt`` does: the node's running tasks are requeued at once
(not counted as retries), the node is ``preempted``, and the backend is
asked for it back after ``batchnb.preempt-return-after``.
"""

from __future__ import annotations

import logging
import threading

from .. import _config
from ..engine.extension import PoolExtension
from ..node.spotnotice import TOPIC
from ..states import NodeState

log = logging.getLogger("batchnb.spot")


class SpotNoticeExtension(PoolExtension):
    """Hears eviction notices from workers and requeues their nodes' tasks at once.

    Here the workers read Azure's scheduled events from a file (on Azure
    they poll the metadata service, as ``ScheduledEventsPlugin()`` does by default):

    >>> import json, pathlib, time
    >>> import batchnb as bnb
    >>> from batchnb.node.spotnotice import ScheduledEventsPlugin
    >>> events = pathlib.Path("scheduledevents.json").absolute()
    >>> _ = events.write_text(json.dumps({"Events": [{
    ...     "EventId": "e1", "EventType": "Preempt", "Resources": ["spot-0"], "EventStatus": "Scheduled",
    ...     "NotBefore": "Wed, 25 Nov 2026 08:00:00 GMT"}]}))
    >>> with bnb.Pool("doc", dedicated=0, spot=1) as pool:
    ...     ext = pool.extension(SpotNoticeExtension)
    ...     _ = pool.client.register_plugin(ScheduledEventsPlugin(events.as_uri(), vm_name_template="{node_id}",
    ...                                                           poll_interval=0.1, grace=0.2))
    ...     while not ext.notices:
    ...         time.sleep(0.1)
    ...     _ = events.write_text('{"Events": []}')        # the evicted VM's events go with it
    ...     print(ext.notices[0]["node_id"], ext.notices[0]["event_type"], [n.state for n in pool.nodes()])
    spot-0 Preempt ['preempted']
    """

    def __init__(self, engine):
        super().__init__(engine)
        self.notices: list[dict] = []
        self._subscribed = False

    def start(self) -> None:
        for plugin in self.engine.backend.notice_plugins():   # the backend says how its nodes hear
            self.engine.client.register_plugin(plugin)
        try:
            self.engine.client.subscribe_topic(TOPIC, self._on_notice)
            self._subscribed = True
        except Exception as exc:  # noqa: BLE001 - a scheduler without topics still runs jobs
            log.debug("cannot subscribe to %s: %s", TOPIC, exc)

    def stop(self) -> None:
        if self._subscribed:
            try:
                self.engine.client.unsubscribe_topic(TOPIC)
            except Exception:  # noqa: BLE001 - the client may be closing
                pass

    def _on_notice(self, event) -> None:
        # Runs on the client's event loop: hand over to the dispatcher, never block here.
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if isinstance(msg, dict) and msg.get("node_id"):
            self.engine.dispatcher.post(self._preempted, msg)

    def _preempted(self, msg: dict) -> None:
        disp = self.engine.dispatcher
        node_id = msg["node_id"]
        node = disp.nodes.nodes.get(node_id)
        if node is None or node.address != msg.get("address"):
            return   # already gone
        self.notices.append(msg)
        reason = f"Azure scheduled event {msg.get('event_type')} {msg.get('event_id')}"
        if msg.get("not_before"):
            reason += f" (not before {msg['not_before']})"
        disp.node_lost(node_id, NodeState.PREEMPTED, reason)
        backend = self.engine.backend
        if backend.can_preempt:
            self._later(_config.seconds("preempt-return-after"), node_id, msg.get("address"), 100)

    def _later(self, delay: float, node_id: str, address: str, tries: int) -> None:
        timer = threading.Timer(delay, self._back, (node_id, address, tries))
        timer.daemon = True
        timer.start()

    def _back(self, node_id: str, address: str, tries: int) -> None:
        if self.engine.closed or node_id not in self.engine.backend.requested():
            return
        try:
            still_there = address in self.engine.scheduler_workers()
        except Exception:  # noqa: BLE001 - the pool is closing
            return
        if still_there and tries > 0:
            self._later(0.2, node_id, address, tries - 1)   # the evicted worker has not left yet
        else:
            self.engine.backend.restore(node_id)
