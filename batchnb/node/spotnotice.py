"""Spot eviction notices on the node: Azure's scheduled events, heard by each worker.

An Azure spot VM learns of its eviction from the instance metadata
service's scheduled-events endpoint (``Preempt``, at least 30 s ahead).
:class:`ScheduledEventsPlugin` runs on each worker, polls that endpoint and,
on a ``Preempt`` or ``Terminate`` event for its own VM, publishes a notice
on the scheduler's event topic ``batchnb-preempt``, waits ``grace`` seconds
and closes the worker gracefully. The pool's side is
:class:`batchnb.extensions.spotnotice.SpotNoticeExtension`.

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
import urllib.request

from distributed.diagnostics.plugin import WorkerPlugin

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

    Register it on a pool's workers with ``pool.client.register_plugin(plugin)``.

    >>> plugin = ScheduledEventsPlugin(vm_name_template="bnb-1a2b3c4d-{node_id}", grace=5)
    >>> plugin.url == AZURE_SCHEDULED_EVENTS_URL, plugin.kinds
    (True, ('Preempt', 'Terminate'))
    >>> plugin.vm_name_template.format(node_id="spot-0")        # the worker named spot-0 watches this VM
    'bnb-1a2b3c4d-spot-0'
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
