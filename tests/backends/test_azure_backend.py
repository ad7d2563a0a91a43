"""The Azure backend at the boundary of the Azure management SDK.

``RecordingAzureSDK`` (tests/azure_standin.py) records every call the backend
makes through dask-cloudprovider's AzureVMCluster; ``LocalVMHost`` runs what
each VM's cloud-init would run, as local processes on 127.0.0.1, and serves
Azure's scheduled-events endpoint. So these tests check the exact VM requests
and the whole path behind them: TLS, node names, the start task in the
bootstrap, and eviction notices turned into requeues. The VMs boot in a
clean environment (no batchnb, no test Python): what runs there is what the
bootstrap installed from the wheel shipped through Azurite.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from urllib.parse import unquote

import pytest

import batchnb as bnb
from waiting import wait_for
from batchnb.extensions.spotnotice import SpotNoticeExtension
from batchnb.extensions.starttask import StartTaskExtension
from batchnb.backends.azure import AzureBackend, vm_name
from batchnb.errors import SpecError
from batchnb.engine.ledger import Ledger
from batchnb.spec import PoolSpec

from azure_standin import LocalVMHost, RecordingAzureSDK, vm_bootstrap_dir, vm_wheel_store

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
START = ('echo "start $AZ_BATCH_NODE_ID $(command -v python)"; '
         '[ "$AZ_BATCH_NODE_ID" != spot-0 ] || { echo "not on spot-0" >&2; exit 3; }')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azure_options(host, sdk, tmp_path) -> dict:
    """Options of a pool whose VMs are played by ``host`` on 127.0.0.1."""
    store, store_options = vm_wheel_store()
    return dict(location="westeurope", resource_group="rg", vnet="vnet", security_group="nsg",
                subscription_id=SUBSCRIPTION, auto_shutdown=False, bootstrap_dir=vm_bootstrap_dir(),
                wheel_store=store, wheel_storage_options=store_options,
                scheduler_options={"host": "127.0.0.1", "port": free_port(), "dashboard_address": "127.0.0.1:0"},
                worker_options={"host": "127.0.0.1"}, node_root=str(tmp_path / "nodes"),
                scheduled_events_url=host.url, scheduled_events_poll=0.2, eviction_grace=0.5,
                azure_sdk=sdk, start_timeout=120)


def states(pool) -> dict:
    return {n.id: n.state for n in pool.nodes()}


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    """One azure pool (1 dedicated + 1 spot) whose start task fails on spot-0 only."""
    import dask
    tmp = tmp_path_factory.mktemp("azure")
    host = LocalVMHost(evict_after=1.0)
    sdk = RecordingAzureSDK(host)
    with dask.config.set({"batchnb.preempt-return-after": 0.3}):
        pool = bnb.Pool("az", backend="azure", vm_size="Standard_D2s_v5", dedicated=1, spot=1,
                        start_task=bnb.StartTask(START, max_retries=1), ledger=Ledger(tmp / "l.sqlite"),
                        **azure_options(host, sdk, tmp))
        try:
            wait_for(lambda: states(pool) == {"dedicated-0": "idle", "spot-0": "start_task_failed"}, 60,
                     "the VMs to boot")
            yield pool, sdk, host
        finally:
            pool.close()
            host.close()


def test_vm_requests_spot_only_for_spot_workers_tls_and_start_task_in_bootstrap(azure):
    pool, sdk, _ = azure
    uuid = pool._backend.cluster.uuid
    requests = sdk.vm_requests()
    scheduler, dedicated, spot = (requests[f"dask-{uuid}-scheduler"], requests[vm_name(uuid, "dedicated-0")],
                                  requests[vm_name(uuid, "spot-0")])
    # the scheduler and dedicated nodes are never spot VMs
    for params in (scheduler, dedicated):
        assert not {"priority", "evictionPolicy", "billingProfile"} & set(params["properties"])
    props = spot["properties"]
    assert (props["priority"], props["evictionPolicy"], props["billingProfile"]) == ("Spot", "Delete", {"maxPrice": -1})
    assert props["hardwareProfile"] == {"vmSize": "Standard_D2s_v5"}
    assert props["osProfile"]["computerName"] == vm_name(uuid, "spot-0")
    assert spot["location"] == "westeurope" and spot["tags"]["cluster-id"] == uuid
    # the request is in the REST API's shape: the installed SDK's own model reads every field back
    from azure.mgmt.compute.models import VirtualMachine
    vm = VirtualMachine(spot)
    assert (vm.priority, vm.eviction_policy, vm.billing_profile.max_price) == ("Spot", "Delete", -1)
    assert vm.hardware_profile.vm_size == "Standard_D2s_v5" and vm.storage_profile.os_disk.disk_size_gb == 50
    assert vm.os_profile.custom_data == props["osProfile"]["customData"]
    assert vm.network_profile.network_interfaces[0].id.startswith("/nics/")
    from azure.mgmt.network.models import NetworkInterface, PublicIPAddress
    nic = NetworkInterface(sdk.ops("network_interfaces.begin_create_or_update")[0][2])   # the scheduler's
    assert nic.ip_configurations[0].subnet.id.endswith("/subnets/default")
    assert nic.ip_configurations[0].public_ip_address.id.endswith("/publicIPAddresses/" + nic.ip_configurations[0].name)
    ip = PublicIPAddress(sdk.ops("public_ip_addresses.begin_create_or_update")[0][2])
    assert (ip.public_ip_allocation_method, ip.sku.name) == ("Static", "Standard")
    # TLS: the scheduler listens on tls:// and the VMs get the certificates in their custom data
    assert pool.client.scheduler.address.startswith("tls://")
    dask_line = [c for c in sdk.cloud_init(scheduler)["runcmd"] if " -m distributed.cli.dask_" in c][0]
    inherited = re.search(r'DASK_INTERNAL_INHERIT_CONFIG="([^"]+)"', dask_line).group(1)
    config = json.loads(base64.b64decode(unquote(inherited)))
    assert config["distributed"]["comm"]["require-encryption"] is True
    assert "BEGIN CERTIFICATE" in config["distributed"]["comm"]["tls"]["ca-file"]
    # the start task runs in each node's bootstrap, not in the scheduler's; the worker is named by node id
    assert "starttask.sh" not in json.dumps(sdk.cloud_init(scheduler))
    for node_id, params in (("dedicated-0", dedicated), ("spot-0", spot)):
        runcmd = sdk.cloud_init(params)["runcmd"]
        boot = [c for c in runcmd if "starttask.sh" in c]
        worker = [c for c in runcmd if " -m distributed.cli.dask_" in c][0]
        assert len(boot) == 1 and runcmd.index(boot[0]) < runcmd.index(worker)
        script = base64.b64decode(re.search(r"echo (\S+) \| base64 -d", boot[0]).group(1)).decode()
        assert f"export AZ_BATCH_NODE_ID={node_id}" in script and "not on spot-0" in script
        assert "max=2;" in script                                 # max_retries=1: two attempts
        assert f'"name": "{node_id}"' in worker and "distributed.cli.dask_spec" in worker
        # the start task and the worker run after the bootstrap succeeded, from its venv
        root = pool._backend.boot["root"]
        for line in (boot[0], worker):
            assert line.startswith(f"[ -f {root}/ready ] && export PATH={root}/venv/bin:$PATH")
        assert f" {root}/venv/bin/python -m distributed.cli.dask_spec " in worker
    # a supported Ubuntu LTS by default (dask-cloudprovider's default is 18.04)
    assert scheduler["properties"]["storageProfile"]["imageReference"] == {
        "publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}


def test_start_task_from_bootstrap_keeps_failed_spot_node_out(azure, unique):
    pool, _, _ = azure
    results = pool.extension(StartTaskExtension).results
    venv_python = f"{pool._backend.boot['root']}/venv/bin/python"
    # the start task ran in the tasks' environment: the bootstrap's venv first on PATH
    assert results["dedicated-0"].succeeded and f"start dedicated-0 {venv_python}" in results["dedicated-0"].stdout_tail
    bad = results["spot-0"]
    assert (bad.exit_code, bad.attempts) == (3, 2) and "not on spot-0" in bad.stderr_tail
    job = pool.job(unique, max_task_retries=0)
    for i in range(4):
        job.add_task(f"t{i}", "echo $AZ_BATCH_NODE_ID")
    assert job.wait(timeout=60).ok
    assert {t.node for t in job.tasks()} == {"dedicated-0"}


def test_scheduled_preempt_event_requeues_gracefully_and_node_comes_back(azure, unique):
    pool, sdk, host = azure
    uuid = pool._backend.cluster.uuid
    pool.resize(spot=2)                                  # spot-1's start task succeeds
    wait_for(lambda: states(pool).get("spot-1") == "idle", 60, "spot-1 to boot")
    job = pool.job(unique, max_task_retries=0)
    for i in range(2):
        job.add_task(f"long{i}", "sleep 2; echo done")
    on_spot = wait_for(lambda: next((t.id for t in job.tasks() if t.node == "spot-1" and t.state == "running"),
                                    None), 20, "a task running on spot-1")
    # Azure announces the eviction of spot-1's VM; the VM goes 1 s later
    host.evict(vm_name(uuid, "spot-1"))
    notices = wait_for(lambda: pool.extension(SpotNoticeExtension).notices, 10, "the eviction notice")
    assert notices[0]["node_id"] == "spot-1" and notices[0]["event_type"] == "Preempt"
    assert states(pool)["spot-1"] == "preempted"
    assert pool.ledger.task(unique, on_spot)["requeues"] == 1
    assert job.wait(timeout=60).ok
    t = job.task(on_spot)
    assert [a["state"] for a in t.attempts] == ["requeued", "succeeded"]
    assert "Azure scheduled event Preempt" in t.attempts[0]["message"]
    # a new VM is made under the same node id and joins the pool again
    wait_for(lambda: states(pool).get("spot-1") == "idle", 60, "spot-1 to come back")
    assert [a[1] for a in sdk.ops("virtual_machines.begin_create_or_update")].count(vm_name(uuid, "spot-1")) == 2


def test_pool_preempt_asks_azure_to_evict_the_spot_vm(azure):
    pool, sdk, _ = azure
    uuid = pool._backend.cluster.uuid
    with pytest.raises(SpecError, match="spot nodes only") as err:
        pool.preempt("dedicated-0")
    assert err.value.field == "node_id" and states(pool)["dedicated-0"] == "idle"
    wait_for(lambda: states(pool).get("spot-1") == "idle", 60, "spot-1 up")
    pool.preempt("spot-1")
    assert sdk.ops("virtual_machines.simulate_eviction")[-1] == ("rg", vm_name(uuid, "spot-1"))
    assert states(pool)["spot-1"] == "preempted"


def test_tasks_run_the_drivers_batchnb_installed_by_the_bootstrap_in_a_clean_vm(azure, unique):
    # The VMs boot with no batchnb and no test Python on PATH (LocalVMHost's clean environment):
    # a Python task unpickles only because the bootstrap installed this batchnb from the shipped wheel.
    pool, sdk, _ = azure
    root = pool._backend.boot["root"]
    job = pool.job(unique, max_task_retries=0)

    def where():        # defined here, so that it travels by value (this module is not on the VMs)
        import sys
        import batchnb
        return batchnb.__version__, sys.prefix, batchnb.__file__
    job.add_task("cmd", 'python -c "import batchnb, sys; print(batchnb.__version__, sys.prefix)"')
    py = job.submit(where)
    assert job.wait(timeout=60).ok
    assert job.task("cmd").stdout().split() == [bnb.__version__, f"{root}/venv"]
    version, prefix, path = py.result(timeout=30)
    assert (version, prefix) == (bnb.__version__, f"{root}/venv")
    assert path.startswith(f"{root}/venv/lib/") and "site-packages/batchnb/" in path
    # it came from the wheel the driver shipped: its SHA-256 is the one the bootstrap checked
    assert open(f"{root}/venv/.batchnb-wheel").read().strip() == pool._backend.boot["wheel_sha"]


@pytest.mark.parametrize("options, field", [
    ({"eviction_policy": "Keep"}, "eviction_policy"),
    ({"max_price": 0}, "max_price"),
    ({"max_price": True}, "max_price"),
    ({"node_root": "relative/dir"}, "node_root"),
    ({"regionn": "westeurope"}, "regionn"),
    ({"wheel_store": "file:///tmp/wheels"}, "wheel_store"),
    ({"bootstrap_dir": "opt/batchnb"}, "bootstrap_dir"),
    ({"start_timeout": 0}, "start_timeout"),
    ({"create_concurrency": 0}, "create_concurrency"),
])
def test_bad_options_are_refused_before_any_vm(options, field):
    sdk = RecordingAzureSDK()
    with pytest.raises(SpecError) as err:
        AzureBackend(PoolSpec("az", backend="azure"), azure_sdk=sdk, **options)
    assert err.value.field == field
    assert sdk.calls == []


class SchedulerOnlyHost(LocalVMHost):
    """Boots the scheduler's VM only: node VMs are made (recorded, with their disks) but never join."""

    def boot(self, name, params):
        if name.endswith("-scheduler"):
            super().boot(name, params)


def test_removing_a_vm_deletes_its_own_disk_only_and_its_nic(tmp_path):
    # spot-1 is a prefix of spot-10 and spot-11: their attached OS disks must be left alone,
    # and spot-1's NIC deleted (dask-cloudprovider's `self.name in disk.name` failed before it).
    import dask
    host = SchedulerOnlyHost()
    sdk = RecordingAzureSDK(host)
    try:
        with dask.config.set({"batchnb.preempt-return-after": 0.1}):
            with bnb.Pool("az12", backend="azure", vm_size="Standard_D2s_v5", dedicated=0, spot=12,
                          ledger=Ledger(tmp_path / "l.sqlite"), **azure_options(host, sdk, tmp_path)) as pool:
                uuid = pool._backend.cluster.uuid
                victim = vm_name(uuid, "spot-1")
                wait_for(lambda: len(sdk.vm_requests()) == 13, 20, "the 12 node VMs to be made")
                nic = sdk.vm_requests()[victim]["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
                nic = nic.rsplit("/", 1)[1]
                disk = next(d for d, vm in sdk.disks.items() if vm == victim)
                pool.preempt("spot-1")           # its old VM is deleted when a new one is made
                wait_for(lambda: ("rg", nic) in sdk.ops("network_interfaces.begin_delete"), 15,
                         "spot-1's NIC to be deleted")
                assert [a[1] for a in sdk.ops("disks.begin_delete")] == [disk]
                assert {vm for vm in sdk.disks.values() if vm} >= {vm_name(uuid, f"spot-{i}") for i in (10, 11)}
    finally:
        host.close()


def test_chaos_on_groups_azure_cannot_evict_is_refused(azure):
    from batchnb.extensions.chaos import ChaosExtension
    pool, _, _ = azure
    with pytest.raises(SpecError) as err:
        pool.chaos(preempt_rate=1, groups=("spot", "dedicated"))
    assert err.value.field == "chaos.groups" and "'dedicated'" in str(err.value)
    assert pool.extension(ChaosExtension).options is None
