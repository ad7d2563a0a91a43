"""The Azure backend's Dask cluster: node VMs named by node id, per-group requests, a seam for the SDK.

See :mod:`batchnb.backends.azure` for what each part is for; this module
holds the classes that :class:`~batchnb.backends.azure.AzureBackend` and the
agent on a scheduler VM (:mod:`._azure_adopt`) both build on.

>>> vm_name("a1b2c3d4", "spot-3")
'bnb-a1b2c3d4-spot-3'
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging

from dask_cloudprovider.azure.azurevm import AzureVMCluster, AzureVMWorker

from ._azure_bootstrap import render
from ._azure_rest import RestShapedCompute, RestShapedNetwork
from ._azure_startup import BatchnbAzureVMScheduler, CleanOnFailure, watch_join

log = logging.getLogger("batchnb.azure")


def vm_name(cluster_id: str, node_id: str) -> str:
    """The Azure VM (and computer) name of a node."""
    return f"bnb-{cluster_id}-{node_id}"


class BatchnbAzureVMWorker(CleanOnFailure, AzureVMWorker):
    """A node's VM: named ``bnb-<cluster>-<node id>``; its Dask worker is named by the node id."""

    def __init__(self, scheduler, *args, name=None, node_group: str = "dedicated", start_lines=(), **kwargs):
        super().__init__(scheduler, *args, **kwargs)
        self.node_id, self.node_group = str(name), node_group
        self.start_lines = list(start_lines)
        # WorkerMixin names the worker after a random VM name; a node is known by its id.
        generated = self.name
        self.command = self.command.replace(json.dumps(generated), json.dumps(self.node_id))
        if "--name " + generated in self.command:
            self.command = self.command.replace("--name " + generated, "--name " + self.node_id)
        self.name = vm_name(self.cluster.uuid, self.node_id)

    async def start(self):
        await super().start()
        # Not awaited: the cluster's other VM requests must not wait for this one's worker.
        self._watch = asyncio.ensure_future(watch_join(self, self.node_id, self.cluster.start_timeout))

    def owns_disk(self, disk_name: str) -> bool:
        """Whether ``disk_name`` is this VM's: Azure names a VM's OS disk ``<vm>_OsDisk_1_<hex>``.

        dask-cloudprovider tests ``self.name in disk.name``, and ``bnb-<c>-spot-1`` is in
        ``bnb-<c>-spot-10_OsDisk_1_...``: removing spot-1 would try to delete spot-10's disk.
        """
        return disk_name.startswith(self.name + "_")

    async def destroy_vm(self):
        """Delete the VM, then its own disks only, then its NIC and public IP.

        A disk that cannot be deleted is logged, not raised: the NIC and IP behind it
        must go all the same, or they leak (and Azure bills public IPs).
        """
        cluster, rg = self.cluster, self.cluster.resource_group
        await self.call_async(cluster.compute_client.virtual_machines.begin_delete(rg, self.name).wait)
        cluster._log(f"Terminated VM {self.name}")
        try:
            disks = await self.call_async(cluster.compute_client.disks.list_by_resource_group, rg)
        except Exception as exc:
            log.warning("VM %s: cannot list its disks: %s", self.name, exc)
            disks = []
        for disk in disks:
            if self.owns_disk(disk.name):
                try:
                    await self.call_async(cluster.compute_client.disks.begin_delete(rg, disk.name).wait)
                except Exception as exc:
                    log.warning("VM %s: cannot delete its disk %s: %s", self.name, disk.name, exc)
        await self.call_async(cluster.network_client.network_interfaces.begin_delete(rg, self.nic.name).wait)
        if self.public_ingress:
            await self.call_async(cluster.network_client.public_ip_addresses.begin_delete(rg, self.public_ip.name).wait)


class BatchnbAzureVMCluster(AzureVMCluster):
    """``AzureVMCluster`` with per-group worker specs and a seam for the Azure management clients."""

    worker_class = BatchnbAzureVMWorker
    _azure_sdk = None
    # AzureVMCluster.__init__ assigns its own scheduler class just before it starts the scheduler.
    scheduler_class = property(lambda self: BatchnbAzureVMScheduler, lambda self, value: None)

    def __init__(self, *, azure_sdk=None, group_options: dict | None = None, boot: dict | None = None,
                 start_timeout: float = 900.0, create_concurrency: int = 32, **kwargs):
        from concurrent.futures import ThreadPoolExecutor
        # Set before the parent's __init__, which makes the clients and starts the scheduler VM.
        self._azure_sdk = azure_sdk
        self.group_options = group_options or {}
        self.boot, self.start_timeout = boot or {}, start_timeout
        self.start_failures: dict = {}
        self._executor = ThreadPoolExecutor(create_concurrency, thread_name_prefix="batchnb-azure")
        super().__init__(**kwargs)
        self.worker_class = BatchnbAzureVMWorker

    async def call_async(self, f, *args, **kwargs):
        return await self.loop.run_in_executor(self._executor, lambda: f(*args, **kwargs))

    def render_process_cloud_init(self, process):
        return render(self, process)

    # The parent assigns real clients in __init__; with a stand-in SDK those assignments are ignored.
    def _client(self, attr):
        return getattr(self._azure_sdk, attr) if self._azure_sdk is not None else self.__dict__.get("_" + attr)

    # Requests leave in the REST API's shape whichever SDK generation is installed (see _azure_rest).
    compute_client = property(lambda self: RestShapedCompute(self._client("compute_client")),
                              lambda self, value: self.__dict__.__setitem__("_compute_client", value))
    network_client = property(lambda self: RestShapedNetwork(self._client("network_client")),
                              lambda self, value: self.__dict__.__setitem__("_network_client", value))
    credentials = property(lambda self: self._client("credential"),
                           lambda self, value: self.__dict__.__setitem__("_credential", value))

    def group_spec(self, group: str, node_id: str) -> dict:
        """The worker spec of a node of ``group``: spot options and the start task only where they belong."""
        extra = self.group_options.get(group, {})
        options = dict(self.worker_options)    # shallow: it holds the cluster and its config
        options["worker_options"] = copy.deepcopy(options.get("worker_options") or {})
        options["node_group"] = group
        options["extra_vm_options"] = {**(options.get("extra_vm_options") or {}), **extra.get("vm", {})}
        options["start_lines"] = list(extra.get("bootstrap", lambda n: [])(node_id))
        options["docker_args"] = " ".join(filter(None, [options.get("docker_args") or "", extra.get("docker_args", "")]))
        return {"cls": BatchnbAzureVMWorker, "options": options}
