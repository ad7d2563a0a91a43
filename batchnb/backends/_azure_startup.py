"""Azure VMs that come up in time or leave nothing behind.

dask-cloudprovider waits for the scheduler VM's port with no limit, leaves a
NIC (and public IP) behind when a VM request fails, and never notices a
worker VM whose Dask worker does not join (a failed bootstrap: the VM is
billed for nothing). Here every VM gets ``start_timeout`` seconds from its
request: the scheduler's port must open in that time, or its VM, disks, NIC
and public IP are deleted and the pool's start fails with a
:class:`~batchnb.errors.BackendError`; a node whose worker has not joined by
then is deleted the same way and recorded in ``cluster.start_failures``.

The blocking SDK calls of many VMs run at once on a thread pool of the
cluster's own (``create_concurrency`` threads): the event loop's default
executor has ``cpu + 4`` threads, so a pool of 100 nodes would be made six
VMs at a time.

>>> cleanup_steps("bnb-a1-spot-3", public_ip=True)
['virtual_machines.begin_delete', 'disks.begin_delete', 'network_interfaces.begin_delete', 'public_ip_addresses.begin_delete']
"""

from __future__ import annotations

import asyncio
import logging
import time

from dask_cloudprovider.azure.azurevm import AzureVMScheduler
from distributed.core import Status
from dask_cloudprovider.utils.socket import is_socket_open

from ..errors import BackendError

log = logging.getLogger("batchnb.azure")

#: what to look at on a VM whose bootstrap failed
ON_THE_VM = "/var/log/cloud-init-output.log and <bootstrap_dir>/bootstrap.log on the VM"


def cleanup_steps(name: str, public_ip: bool) -> list[str]:
    """The deletions that undo a (half-)made VM, in order."""
    steps = ["virtual_machines.begin_delete", "disks.begin_delete", "network_interfaces.begin_delete"]
    return steps + (["public_ip_addresses.begin_delete"] if public_ip else [])


async def remove_everything(vm) -> None:
    """Delete whatever of ``vm`` exists: the VM, its own disks, its NIC, its public IP; never raises."""
    cluster, rg = vm.cluster, vm.cluster.resource_group

    async def attempt(what, fn, *args):
        try:
            poller = await cluster.call_async(fn, *args)
            if hasattr(poller, "wait"):
                await cluster.call_async(poller.wait)
        except Exception as exc:  # noqa: BLE001 - a part that was never made is not found; go on
            log.info("VM %s: cleaning up %s: %s", vm.name, what, exc)

    compute, network = cluster.compute_client, cluster.network_client
    await attempt("the VM", compute.virtual_machines.begin_delete, rg, vm.name)
    try:
        disks = await cluster.call_async(compute.disks.list_by_resource_group, rg)
    except Exception as exc:  # noqa: BLE001
        log.warning("VM %s: cannot list its disks: %s", vm.name, exc)
        disks = []
    for disk in disks:
        if disk.name.startswith(vm.name + "_"):
            await attempt(f"disk {disk.name}", compute.disks.begin_delete, rg, disk.name)
    await attempt("its NIC", network.network_interfaces.begin_delete, rg, vm.nic_name)
    if vm.public_ingress:
        await attempt("its public IP", network.public_ip_addresses.begin_delete, rg, vm.nic_name)


class CleanOnFailure:
    """A VM whose failed request deletes what it made (dask-cloudprovider leaves the NIC and IP)."""

    async def create_vm(self):
        self._requested = time.monotonic()
        try:
            return await super().create_vm()
        except BaseException:
            await remove_everything(self)
            raise


class BatchnbAzureVMScheduler(CleanOnFailure, AzureVMScheduler):
    """The scheduler's VM: its port must open within the cluster's ``start_timeout``."""

    async def wait_for_scheduler(self):
        _, address = (self.external_address or self.address).split("://")
        ip, port = address.rsplit(":", 1)
        deadline = self._requested + self.cluster.start_timeout
        while not is_socket_open(ip, port):
            if time.monotonic() > deadline:
                await remove_everything(self)
                raise BackendError(
                    f"the Azure scheduler VM {self.name} did not answer on {ip}:{port} within "
                    f"{self.cluster.start_timeout:g}s (start_timeout=); it, its disks, NIC and public IP were "
                    f"deleted. Its bootstrap may have failed: see {ON_THE_VM}")
            await asyncio.sleep(0.2)


async def watch_join(worker, node_id: str, timeout: float) -> None:
    """Delete ``worker``'s VM when its Dask worker has not joined within ``timeout`` of its request."""
    cluster = worker.cluster
    deadline = getattr(worker, "_requested", time.monotonic()) + timeout

    def settled():
        infos = (getattr(cluster, "scheduler_info", None) or {}).get("workers", {}).values()
        return (any(str(info.get("name")) == node_id for info in infos)       # joined
                or node_id not in cluster.worker_spec or worker.status == Status.closed)   # or released
    while time.monotonic() < deadline:
        if settled():
            return
        await asyncio.sleep(0.5)
    if settled():
        return
    message = (f"node {node_id}: its Azure VM {worker.name} was made but its Dask worker did not join within "
               f"{timeout:g}s (start_timeout=); the VM, its disks, NIC and public IP were deleted. Its bootstrap "
               f"may have failed: see {ON_THE_VM}")
    log.error(message)
    cluster.start_failures[node_id] = BackendError(message)
    # Out of the spec first, so that the cluster does not make it again.
    cluster.worker_spec.pop(node_id, None)
    if cluster.workers.get(node_id) is worker:
        cluster.workers.pop(node_id)
    await remove_everything(worker)
