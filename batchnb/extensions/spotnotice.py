"""Spot eviction notices: Azure's scheduled events turned into a graceful requeue.

An Azure spot VM learns of its eviction from the instance metadata
service's scheduled-events endpoint (``Preempt``, at least 30 s ahead).
:class:`ScheduledEventsPlugin` runs on each worker, polls that endpoint and,
on a ``Preempt`` or ``Terminate`` event for its own VM, publishes a notice
on the scheduler's event topic ``batchnb-preempt``, waits ``grace`` seconds
and closes the worker gracefully. :class:`SpotNoticeExtension`, on the
pool's side, hears the notice and does what ``pool.preempt`` does: the
node's running tasks are requeued at once (not counted as retries), the node
is ``preempted``, and the backend is asked for it back after
``batchnb.preempt-return-after``.

Unlike dask-cloudprovider's ``AzurePreemptibleWorkerPlugin``, which only
closes the worker at ``NotBefore``, the pool acts on the first notice: the
tasks start again elsewhere while the doomed VM is still up.

>>> doc = {"Events": [{"EventId": "e1", "EventType": "Preempt", "Resources": ["bnb-1a2b-spot-0"],
...                    "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT"}]}
>>> matching_event(doc, ("Preempt", "Terminate"), "bnb-1a2b-spot-0")["EventId"]
'e1'
>>> matching_event(doc, ("Preempt",), "bnb-1a2b-spot-1") is None
True
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request

from distributed.diagnostics.plugin import WorkerPlugin

from .. import _config
from ..engine.extension import PoolExtension
from ..states import NodeState

log = logging.getLogger("batchnb.spot")

TOPIC = "batchnb-preempt"
#: Azure's instance metadata service, reachable from inside every Azure VM only.
AZURE_SCHEDULED_EVENTS_URL = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"


def matching_event(doc: dict, kinds, vm_name: str | None) -> dict | None:
    """The first event of ``kinds`` that concerns ``vm_name`` (or any VM when it is None)."""
    for event in (doc or {}).get("Events") or ():
        if not isinstance(event, dict) or event.get("EventType") not in kinds:
            continue
        resources = event.get("Resources") or []
        if vm_name is None or not resources or vm_name in resources:
            return event
    return None


class ScheduledEventsPlugin(WorkerPlugin):
    """Polls Azure's scheduled events on a worker; on eviction, tells the pool, then leaves.

    Parameters
    ----------
    url : str
        The scheduled-events endpoint (Azure's metadata service by default).
    vm_name_template : str, optional
        ``"bnb-1a2b3c4d-{node_id}"``: the VM name of a worker, to pick its own
        events out of a host's list. None takes every event as its own.
    poll_interval, grace : float
        Seconds between polls; seconds between the notice and the worker's close.

    >>> # client.register_plugin(ScheduledEventsPlugin(vm_name_template="bnb-1a2b3c4d-{node_id}"))
    """

    name = "batchnb-scheduled-events"

    def __init__(self, url: str = AZURE_SCHEDULED_EVENTS_URL, vm_name_template: str | None = None,
                 poll_interval: float = 1.0, grace: float = 2.0, kinds=("Preempt", "Terminate")):
        self.url = url
        self.vm_name_template = vm_name_template
        self.poll_interval = poll_interval
        self.grace = grace
        self.kinds = tuple(kinds)
        self.worker = None
        self.notice: dict | None = None
        self._task = None

    def setup(self, worker):
        self.worker = worker
        self._task = asyncio.ensure_future(self._watch())

    def teardown(self, worker):
        if self._task is not None:
            self._task.cancel()

    def _fetch(self) -> dict:
        req = urllib.request.Request(self.url, headers={"Metadata": "true"})
        with urllib.request.urlopen(req, timeout=max(1.0, self.poll_interval * 2)) as resp:
            return json.loads(resp.read().decode("utf-8") or "{}")

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        vm_name = (self.vm_name_template.format(node_id=self.worker.name) if self.vm_name_template else None)
        while self.notice is None:
            try:
                doc = await loop.run_in_executor(None, self._fetch)
            except Exception as exc:  # noqa: BLE001 - the endpoint may be briefly unreachable
                log.debug("scheduled events unreachable: %s", exc)
                doc = None
            event = matching_event(doc, self.kinds, vm_name) if isinstance(doc, dict) else None
            if event is None:
                await asyncio.sleep(self.poll_interval)
                continue
            self.notice = event
            self.worker.log_event(TOPIC, {
                "node_id": str(self.worker.name), "address": self.worker.address,
                "event_id": event.get("EventId"), "event_type": event.get("EventType"),
                "not_before": event.get("NotBefore"), "status": event.get("EventStatus")})
            log.warning("worker %s: Azure scheduled event %s (%s); leaving in %ss", self.worker.name,
                        event.get("EventType"), event.get("EventId"), self.grace)
            await asyncio.sleep(self.grace)   # the pool requeues meanwhile; nothing new comes here
            # A task of its own: closing tears this plugin down, which cancels the watch.
            asyncio.ensure_future(self.worker.close_gracefully(
                reason=f"azure-{str(event.get('EventType')).lower()}"))


class SpotNoticeExtension(PoolExtension):
    """Hears eviction notices from workers and requeues their nodes' tasks at once.

    >>> # pool.extension(SpotNoticeExtension).notices   # [{"node_id": ..., "event_type": "Preempt", ...}]
    """

    def __init__(self, pool):
        super().__init__(pool)
        self.notices: list[dict] = []
        self._subscribed = False

    def start(self) -> None:
        try:
            self.pool.client.subscribe_topic(TOPIC, self._on_notice)
            self._subscribed = True
        except Exception as exc:  # noqa: BLE001 - a scheduler without topics still runs jobs
            log.debug("cannot subscribe to %s: %s", TOPIC, exc)

    def stop(self) -> None:
        if self._subscribed:
            try:
                self.pool.client.unsubscribe_topic(TOPIC)
            except Exception:  # noqa: BLE001 - the client may be closing
                pass

    def _on_notice(self, event) -> None:
        # Runs on the client's event loop: hand over to the dispatcher, never block here.
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if isinstance(msg, dict) and msg.get("node_id"):
            self.pool._dispatcher.post(self._preempted, msg)

    def _preempted(self, msg: dict) -> None:
        disp = self.pool._dispatcher
        node_id = msg["node_id"]
        node = disp.nodes.nodes.get(node_id)
        if node is None or node.address != msg.get("address"):
            return   # already gone
        self.notices.append(msg)
        reason = f"Azure scheduled event {msg.get('event_type')} {msg.get('event_id')}"
        if msg.get("not_before"):
            reason += f" (not before {msg['not_before']})"
        disp.node_lost(node_id, NodeState.PREEMPTED, reason)
        backend = self.pool._backend
        if backend.can_preempt:
            self._later(_config.seconds("preempt-return-after"), node_id, msg.get("address"), 100)

    def _later(self, delay: float, node_id: str, address: str, tries: int) -> None:
        timer = threading.Timer(delay, self._back, (node_id, address, tries))
        timer.daemon = True
        timer.start()

    def _back(self, node_id: str, address: str, tries: int) -> None:
        if self.pool._closed or node_id not in self.pool._backend.requested():
            return
        try:
            still_there = address in self.pool.client.scheduler_info(n_workers=-1).get("workers", {})
        except Exception:  # noqa: BLE001 - the pool is closing
            return
        if still_there and tries > 0:
            self._later(0.2, node_id, address, tries - 1)   # the evicted worker has not left yet
        else:
            self.pool._backend.restore(node_id)
