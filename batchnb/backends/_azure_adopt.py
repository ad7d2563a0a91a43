"""An Azure pool whose agent runs on its own scheduler VM (``agent_on_scheduler=True``).

Two halves, one per machine:

- **The creator** (:class:`SchedulerVM`) makes the scheduler VM only, with
  the creator's Azure credentials: its request asks for a system-assigned
  managed identity (``identity: {"type": "SystemAssigned"}``) and for its OS
  disk and NIC to go with it (``deleteOption: Delete``), and its cloud-init
  installs what the agent needs to make VMs (:data:`AGENT_PACKAGES`, at the
  driver's versions). The creator then gives that identity ``Contributor`` on
  the pool's resource group (the authorization management client), and hands
  the agent what it needs to adopt the running scheduler (:meth:`SchedulerVM.handoff`):
  its addresses and TLS, the cluster's id, a read URL of this batchnb's wheel
  signed for :data:`WHEEL_URL_DAYS` days. No Azure credential of the creator's
  is in it.
- **The agent**, in the scheduler VM's process (:class:`AdoptingAzureVMCluster`):
  a cluster whose scheduler is the one it runs in (no second scheduler VM),
  whose node VMs are made and deleted with the VM's managed identity
  (:func:`managed_identity_sdk`), and which, when the pool is closed, sends
  as its very last request the deletion of its own VM (:func:`delete_own_vm`):
  Azure finishes a deletion the VM itself asked for.

>>> request = {"storage_profile": {"os_disk": {"create_option": "FromImage"}},
...            "network_profile": {"network_interfaces": [{"id": "/nics/n"}]}}
>>> managed = self_managing_request(request)
>>> managed["identity"], managed["storage_profile"]["os_disk"]["delete_option"]
({'type': 'SystemAssigned'}, 'Delete')
>>> managed["network_profile"]["network_interfaces"][0]["properties"]
{'delete_option': 'Delete'}
"""

from __future__ import annotations

import copy
import logging
import shlex
import threading
import time
import uuid
from importlib import metadata

import dask.config
from distributed.deploy.spec import ProcessInterface

from ..errors import BackendError
from ._azure_bootstrap import build_wheel, prepare_wheel, ship_wheel, signed_url
from ._azure_cluster import BatchnbAzureVMCluster
from ._azure_rest import Amended, Client
from ._azure_startup import BatchnbAzureVMScheduler

log = logging.getLogger("batchnb.azure")

#: Azure's built-in Contributor role (the same id in every subscription).
CONTRIBUTOR = "b24988ac-6180-42dd-9ca3-a21e5a4c5b1b"
#: What the agent on the scheduler VM needs beyond the nodes' venv to make VMs.
AGENT_PACKAGES = ("dask-cloudprovider", "azure-identity", "azure-mgmt-compute", "azure-mgmt-network")
#: How long the wheel's read URL handed to the agent stays valid: nodes made later cannot bootstrap.
WHEEL_URL_DAYS = 30
#: How long a new managed identity may take to be known to the role assignment API.
IDENTITY_WAIT = 120.0


def self_managing_request(params: dict) -> dict:
    """A scheduler VM request (dask-cloudprovider's snake_case) with a managed identity, and its
    OS disk and NIC deleted with it (the VM deletes itself last: nothing is left to delete them)."""
    params = copy.deepcopy(params)
    params["identity"] = {"type": "SystemAssigned"}
    params.setdefault("storage_profile", {}).setdefault("os_disk", {})["delete_option"] = "Delete"
    for nic in params.get("network_profile", {}).get("network_interfaces", []):
        nic.setdefault("properties", {})["delete_option"] = "Delete"
    return params


def agent_pins() -> list[str]:
    """``name==version`` of :data:`AGENT_PACKAGES` as installed here (the driver's)."""
    pins = []
    for name in AGENT_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _self_managing_compute(compute, vm: str) -> Client:
    """``compute_client`` whose request for the VM ``vm`` is amended by :func:`self_managing_request`."""
    return Client(compute, virtual_machines=Amended(
        compute.virtual_machines,
        lambda name, params: self_managing_request(params) if name == vm and isinstance(params, dict) else params))


def _self_deleting_ips(network) -> Client:
    """``network_client`` whose public IPs are deleted with the VM that uses them (the creator's
    cluster makes one VM, the scheduler's)."""
    return Client(network, public_ip_addresses=Amended(
        network.public_ip_addresses,
        lambda name, params: {**params, "delete_option": "Delete"} if isinstance(params, dict) else params))


class SelfManagingScheduler(BatchnbAzureVMScheduler):
    """The creator's scheduler VM: an identity, its disk and NIC deleted with it, the agent's packages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        venv_python = f"{self.cluster.boot['root']}/venv/bin/python"
        # After the bootstrap and before the scheduler (the start lines' place in the cloud-init).
        self.start_lines = [f"{shlex.quote(venv_python)} -m pip install --quiet --disable-pip-version-check "
                            + " ".join(map(shlex.quote, agent_pins()))]


def _make_in_thread(make, timeout: float, what: str):
    box: dict = {}

    def run():
        try:
            box["value"] = make()
        except BaseException as exc:
            box["error"] = exc
    thread = threading.Thread(target=run, name=f"batchnb-azure-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise BackendError(f"the Azure {what} did not come up within {timeout:g}s (start_timeout=); "
                           "check the resource group")
    if "error" in box:
        exc = box["error"]
        raise BackendError(f"cannot start Azure VMs: {type(exc).__name__}: {exc}") from exc
    return box["value"]


class SchedulerVM:
    """The creator's side: the scheduler VM of an agent-on-scheduler pool (see the module's text)."""

    def __init__(self, backend):
        self.backend = backend
        backend.started_at = time.time()        # the scheduler VM is billed from its request on
        prepare_wheel(backend.boot, backend.wheel_store, backend.wheel_storage_options, backend.start_timeout)
        before = copy.deepcopy(dask.config.config)      # AzureVMCluster sets TLS settings globally
        try:
            self.cluster = _make_in_thread(lambda: SelfManagingCluster(
                group_options={}, boot=backend.boot, start_timeout=backend.start_timeout,
                create_concurrency=1, shutdown_scheduler=False, **backend.cluster_kwargs),
                backend.start_timeout + 300, "scheduler VM")
        finally:
            dask.config.config.clear()
            dask.config.config.update(before)
        try:
            self.role_assignment = grant_contributor(self.cluster, self.cluster.scheduler.name)
        except BaseException:
            self.delete()
            raise

    @property
    def address(self) -> str:
        """Where the creator (and the owner's clients) reach the scheduler."""
        scheduler = self.cluster.scheduler
        return getattr(scheduler, "external_address", None) or scheduler.address

    def handoff(self) -> dict:
        """What the agent needs to adopt the scheduler and make the nodes: no credential of the creator's."""
        backend, cluster = self.backend, self.cluster
        wheel_url = None
        if backend.boot.get("docker_image") is None:
            url = ship_wheel(build_wheel(), backend.wheel_store, backend.wheel_storage_options)
            wheel_url = signed_url(url, backend.wheel_storage_options, WHEEL_URL_DAYS * 86400)
        return {"uuid": cluster.uuid, "internal_address": cluster.scheduler.address, "address": self.address,
                "scheduler_vm": cluster.scheduler.name, "security": cluster.security,
                "subscription_id": cluster.subscription_id, "resource_group": cluster.resource_group,
                "started_at": backend.started_at, "pins": list(backend.boot["pins"]),
                "wheel_sha": backend.boot.get("wheel_sha"), "wheel_url": wheel_url}

    def let_go(self) -> None:
        """This process's handle only: the VM (and its scheduler) run on, the agent's now."""
        self.cluster.close(timeout=60)

    def delete(self) -> None:
        """The agent did not start: the scheduler VM, its disks, NIC and public IP go."""
        self.cluster.shutdown_scheduler = True
        self.cluster.close(timeout=120)


def grant_contributor(cluster, vm: str) -> str:
    """Give ``vm``'s managed identity Contributor on the cluster's resource group; the assignment's name."""
    rg, subscription = cluster.resource_group, cluster.subscription_id
    principal = getattr(getattr(cluster.compute_client.virtual_machines.get(rg, vm), "identity", None), "principal_id", None)
    if not principal:
        raise BackendError(f"the scheduler VM {vm} has no managed identity (asked for SystemAssigned): its "
                           "agent could not make the pool's node VMs")
    scope = f"/subscriptions/{subscription}/resourceGroups/{rg}"
    name = str(uuid.uuid4())
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{subscription}/providers/Microsoft.Authorization/"
                                               f"roleDefinitions/{CONTRIBUTOR}",
                           "principalId": principal, "principalType": "ServicePrincipal"}}
    authorization = authorization_client(cluster)
    deadline = time.monotonic() + IDENTITY_WAIT
    while True:
        try:
            authorization.role_assignments.create(scope, name, body)
            return name
        except Exception as exc:
            if "PrincipalNotFound" not in str(exc) or time.monotonic() > deadline:
                raise BackendError(f"cannot give the scheduler VM {vm}'s identity Contributor on resource group "
                                   f"{rg}: {type(exc).__name__}: {exc}") from exc
            time.sleep(5)       # Azure's own advice: retry until the new principal has replicated


def authorization_client(cluster):
    """The Azure authorization management client (the stand-in SDK's in tests)."""
    if cluster._azure_sdk is not None:
        return cluster._azure_sdk.authorization_client
    try:
        from azure.mgmt.authorization import AuthorizationManagementClient
    except ImportError:
        raise BackendError("agent_on_scheduler=True on azure needs azure-mgmt-authorization (in batchnb's azure "
                           "extra: pip install 'batchnb[azure]') to give the scheduler VM's identity its role") from None
    return AuthorizationManagementClient(cluster.credentials, cluster.subscription_id)


def managed_identity_sdk(subscription_id: str):
    """The management clients of the VM this runs on, signed in as its managed identity."""
    from types import SimpleNamespace

    from azure.identity import ManagedIdentityCredential
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    credential = ManagedIdentityCredential()
    return SimpleNamespace(credential=credential,
                           compute_client=ComputeManagementClient(credential, subscription_id),
                           network_client=NetworkManagementClient(credential, subscription_id))


class AdoptedScheduler(ProcessInterface):
    """The scheduler this process runs: adopted, not made; closing the cluster leaves it alone."""

    def __init__(self, cluster=None, **kwargs):
        super().__init__()
        self.cluster = cluster
        self.name = cluster.adopted["scheduler_vm"]
        self.address = cluster.adopted["internal_address"]
        self.external_address = None


class SelfManagingCluster(BatchnbAzureVMCluster):
    """The creator's cluster: the scheduler VM only, asked for as :func:`self_managing_request` says."""

    scheduler_class = property(lambda self: SelfManagingScheduler, lambda self, value: None)

    @property
    def compute_client(self):
        return _self_managing_compute(BatchnbAzureVMCluster.compute_client.fget(self), f"dask-{self.uuid}-scheduler")

    @compute_client.setter
    def compute_client(self, value):
        BatchnbAzureVMCluster.compute_client.fset(self, value)

    @property
    def network_client(self):
        return _self_deleting_ips(BatchnbAzureVMCluster.network_client.fget(self))

    @network_client.setter
    def network_client(self, value):
        BatchnbAzureVMCluster.network_client.fset(self, value)


class AdoptingAzureVMCluster(BatchnbAzureVMCluster):
    """The agent's cluster on the scheduler VM: that scheduler, adopted; node VMs made from here."""

    scheduler_class = property(lambda self: AdoptedScheduler, lambda self, value: None)
    # The creator's cluster id: the nodes are named bnb-<it>-<node id>, as the creator's pool would.
    uuid = property(lambda self: self.adopted["uuid"], lambda self, value: None)

    def __init__(self, *, adopted: dict, **kwargs):
        self.adopted = adopted
        super().__init__(shutdown_scheduler=False, **kwargs)


def adopt(backend) -> dict:
    """What the agent's backend changes before it makes its cluster: the creator's wheel, pins,
    start time and subscription; the VM's managed identity unless clients were given."""
    handoff = backend.adopted
    backend.started_at = handoff["started_at"]      # the scheduler VM's bill began with the creator's request
    backend.boot.update(pins=handoff["pins"], wheel_sha=handoff["wheel_sha"])
    if handoff["wheel_url"] is not None:
        url = handoff["wheel_url"]
        backend.boot["wheel_url"] = lambda: url
    kwargs = dict(backend.cluster_kwargs, subscription_id=handoff["subscription_id"],
                  resource_group=handoff["resource_group"], security=handoff["security"], adopted=handoff)
    if kwargs.get("azure_sdk") is None:
        kwargs["azure_sdk"] = managed_identity_sdk(handoff["subscription_id"])
    return kwargs


def delete_own_vm(backend) -> None:
    """The agent's last request: delete the VM it runs on (its disk and NIC go with it)."""
    cluster, handoff = backend.cluster, backend.adopted
    # The SDK's own client, not the deferred one: the request must leave now, and this process
    # may not live to wait for the deletion's end.
    compute = cluster._client("compute_client")
    log.info("agent: deleting its own scheduler VM %s", handoff["scheduler_vm"])
    compute.virtual_machines.begin_delete(handoff["resource_group"], handoff["scheduler_vm"])
