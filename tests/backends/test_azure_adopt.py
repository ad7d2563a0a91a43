"""An Azure pool whose agent runs on its scheduler VM: the requests, without booting a VM.

The scheduler VM's request asks for a managed identity (and for its disk, NIC
and public IP to go with it); the creator gives that identity Contributor on
the resource group through the authorization client; the agent's backend
adopts the handed-over scheduler with the VM's identity, never the creator's
credentials. The Azure management API is the recording stand-in of
tests/azure_standin.py. The e2e test is tests/e2e/test_detached_beside_azure.py.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from azure_standin import RecordingAzureSDK

import batchnb as bnb
from batchnb.agent import beside
from batchnb.backends._azure_adopt import (
    _self_deleting_ips,
    _self_managing_compute,
    adopt,
    agent_pins,
    grant_contributor,
)
from batchnb.backends._azure_rest import RestShapedCompute, RestShapedNetwork
from batchnb.backends.azure import AzureBackend
from batchnb.spec import PoolSpec

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
WHERE = dict(location="westeurope", resource_group="rg", vnet="vnet", security_group="nsg",
             subscription_id=SUBSCRIPTION)


def _vm_request(nic: str = "/nics/n") -> dict:
    """A VM request as dask-cloudprovider writes it (snake_case)."""
    return {"location": "westeurope", "hardware_profile": {"vm_size": "Standard_D2s_v5"},
            "storage_profile": {"os_disk": {"disk_size_gb": 50, "create_option": "FromImage"}},
            "network_profile": {"network_interfaces": [{"id": nic}]}, "tags": {"cluster-id": "abc"}}


def test_the_scheduler_vm_asks_for_an_identity_and_for_its_disk_nic_and_ip_to_go_with_it():
    sdk = RecordingAzureSDK()
    compute = _self_managing_compute(RestShapedCompute(sdk.compute_client), "dask-abc-scheduler")
    compute.virtual_machines.begin_create_or_update("rg", "dask-abc-scheduler", _vm_request()).wait()
    compute.virtual_machines.begin_create_or_update("rg", "bnb-abc-dedicated-0", _vm_request()).wait()
    requests = sdk.vm_requests()
    scheduler = requests["dask-abc-scheduler"]
    assert scheduler["identity"] == {"type": "SystemAssigned"}
    assert scheduler["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert scheduler["properties"]["networkProfile"]["networkInterfaces"] == [
        {"id": "/nics/n", "properties": {"deleteOption": "Delete"}}]
    node = requests["bnb-abc-dedicated-0"]          # a node VM gets no identity of its own
    assert "identity" not in node and "deleteOption" not in str(node)
    network = _self_deleting_ips(RestShapedNetwork(sdk.network_client))
    network.public_ip_addresses.begin_create_or_update("rg", "nic-1", {"location": "westeurope"}).wait()
    [(_, _, ip)] = sdk.ops("public_ip_addresses.begin_create_or_update")
    assert ip["properties"]["deleteOption"] == "Delete"
    # The scheduler VM installs what its agent makes VMs with, at this machine's versions.
    from importlib.metadata import version
    assert f"dask-cloudprovider=={version('dask-cloudprovider')}" in agent_pins()


def test_the_creator_gives_the_scheduler_vms_identity_contributor_on_the_resource_group():
    sdk = RecordingAzureSDK()
    compute = _self_managing_compute(RestShapedCompute(sdk.compute_client), "dask-abc-scheduler")
    compute.virtual_machines.begin_create_or_update("rg", "dask-abc-scheduler", _vm_request()).wait()
    cluster = SimpleNamespace(resource_group="rg", subscription_id=SUBSCRIPTION, compute_client=compute,
                              _azure_sdk=sdk)
    name = grant_contributor(cluster, "dask-abc-scheduler")
    [(scope, assignment, body)] = sdk.ops("role_assignments.create")
    principal = sdk.compute_client.virtual_machines.get("rg", "dask-abc-scheduler").identity.principal_id
    assert scope == f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg" and assignment == name
    assert body == {"properties": {
        "roleDefinitionId": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/"
                            "b24988ac-6180-42dd-9ca3-a21e5a4c5b1b",
        "principalId": principal, "principalType": "ServicePrincipal"}}
    # A VM made without an identity has none to give a role to: said, not assigned.
    compute.virtual_machines.begin_create_or_update("rg", "bnb-abc-dedicated-0", _vm_request()).wait()
    with pytest.raises(bnb.BackendError, match="has no managed identity"):
        grant_contributor(cluster, "bnb-abc-dedicated-0")
    assert len(sdk.ops("role_assignments.create")) == 1


def test_the_agents_backend_adopts_the_scheduler_with_the_vms_identity_not_the_creators_credentials():
    from azure.identity import ManagedIdentityCredential
    from distributed.security import Security
    handoff = {"uuid": "abc12345", "internal_address": "tls://10.0.0.4:8786", "address": "tls://20.1.2.3:8786",
               "scheduler_vm": "dask-abc12345-scheduler", "security": Security.temporary(),
               "subscription_id": SUBSCRIPTION, "resource_group": "rg", "started_at": time.time() - 60,
               "pins": ["dask==1"], "wheel_sha": "f" * 64, "wheel_url": "https://store/wheel.whl?sig=read-only"}
    backend = AzureBackend(PoolSpec("p", backend="azure", vm_size="Standard_D2s_v5", dedicated=1),
                           adopt_scheduler=handoff, **{**WHERE, "subscription_id": None})
    kwargs = adopt(backend)
    assert isinstance(kwargs["azure_sdk"].credential, ManagedIdentityCredential)
    assert kwargs["subscription_id"] == SUBSCRIPTION and kwargs["security"] is handoff["security"]
    assert kwargs["adopted"] is handoff
    assert backend.started_at == handoff["started_at"]          # the scheduler VM's bill began with its request
    assert backend.boot["wheel_url"]() == handoff["wheel_url"] and backend.boot["pins"] == ["dask==1"]


def test_agent_on_scheduler_on_azure_is_accepted_detached_and_refused_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    assert beside.wanted((), {"backend": "azure", "agent_on_scheduler": True})
    assert not beside.wanted((), {"backend": "azure", "agent_on_scheduler": False})
    with pytest.raises(bnb.SpecError, match="expected True or False") as err:
        beside.wanted((), {"backend": "azure", "agent_on_scheduler": "yes"})
    assert err.value.field == "agent_on_scheduler"
    started = time.monotonic()
    with pytest.raises(bnb.SpecError, match="needs detached=True") as err:
        bnb.Pool("in-kernel", backend="azure", vm_size="Standard_D2s_v5", agent_on_scheduler=True,
                 azure_sdk=RecordingAzureSDK(), **WHERE)
    assert err.value.field == "agent_on_scheduler"
    assert time.monotonic() - started < 10
