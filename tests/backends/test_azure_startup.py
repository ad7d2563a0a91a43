"""Azure VMs made in parallel, in time or not at all; the wheel and the image check (issue 14, point 3).

The management API is the recording stand-in (tests/azure_standin.py); the
VMs that boot are played by ``LocalVMHost`` in a clean environment.
"""

from __future__ import annotations

import threading
import time
import zipfile

import pytest
import yaml

import batchnb as bnb
from batchnb.backends import _azure_bootstrap as boot
from batchnb.backends.azure import vm_name
from batchnb.engine.ledger import Ledger
from batchnb.errors import BackendError, SpecError
from waiting import wait_for

from azure_standin import LocalVMHost, RecordingAzureSDK
from test_azure_backend import SchedulerOnlyHost, azure_options


class NoBootHost(LocalVMHost):
    """VMs are made but none boots: a bootstrap that never finishes, as Azure would show it."""

    def boot(self, name, params):
        pass


class BarrierSDK(RecordingAzureSDK):
    """Each node VM request waits until ``parties`` of them are in flight at once (or 20 s)."""

    def __init__(self, host, parties):
        super().__init__(host)
        self.barrier = threading.Barrier(parties, timeout=20)
        self.broken = False

    def _create_vm(self, rg, name, params):
        if not name.endswith("-scheduler"):
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.broken = True
        return super()._create_vm(rg, name, params)


def test_node_vms_are_requested_in_parallel(tmp_path):
    # 12 requests at once: the event loop's default executor (cpu + 4 threads, 6 here) could not.
    host = SchedulerOnlyHost()
    sdk = BarrierSDK(host, parties=12)
    try:
        with bnb.Pool("azpar", backend="azure", vm_size="Standard_D2s_v5", dedicated=0, spot=12,
                      ledger=Ledger(tmp_path / "l.sqlite"), **azure_options(host, sdk, tmp_path)):
            wait_for(lambda: len(sdk.vm_requests()) == 13, 40, "the 12 node VMs to be requested")
            assert not sdk.broken
    finally:
        host.close()


def test_scheduler_vm_not_up_in_time_is_deleted_with_its_nic_ip_and_disk(tmp_path):
    host = NoBootHost()
    sdk = RecordingAzureSDK(host)
    options = {**azure_options(host, sdk, tmp_path), "start_timeout": 2}
    t0 = time.monotonic()
    try:
        with pytest.raises(BackendError, match=r"scheduler VM .* did not answer .* within 2s \(start_timeout=\)"):
            bnb.Pool("azslow", backend="azure", vm_size="Standard_D2s_v5", dedicated=1,
                     ledger=Ledger(tmp_path / "l.sqlite"), **options)
        assert time.monotonic() - t0 < 60
    finally:
        host.close()
    [vm] = sdk.vm_requests()
    nic = sdk.ops("network_interfaces.begin_create_or_update")[0][1]
    assert ("rg", vm) in sdk.ops("virtual_machines.begin_delete")
    assert ("rg", nic) in sdk.ops("network_interfaces.begin_delete")
    assert ("rg", nic) in sdk.ops("public_ip_addresses.begin_delete")       # the scheduler's public IP
    assert [a[1].startswith(vm + "_OsDisk_1_") for a in sdk.ops("disks.begin_delete")] == [True]
    assert not sdk.disks, "the scheduler's OS disk is left behind"


def test_node_whose_worker_never_joins_is_deleted_and_recorded(tmp_path):
    host = SchedulerOnlyHost()
    sdk = RecordingAzureSDK(host)
    options = {**azure_options(host, sdk, tmp_path), "start_timeout": 45}
    try:
        with bnb.Pool("azlost", backend="azure", vm_size="Standard_D2s_v5", dedicated=1,
                      ledger=Ledger(tmp_path / "l.sqlite"), **options) as pool:
            cluster = pool._backend.cluster
            name = vm_name(cluster.uuid, "dedicated-0")
            wait_for(lambda: "dedicated-0" in cluster.start_failures, 90, "the node's start-up to time out")
            assert "did not join within 45s (start_timeout=)" in str(cluster.start_failures["dedicated-0"])
            nic = sdk.vm_requests()[name]["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
            wait_for(lambda: ("rg", nic.rsplit("/", 1)[1]) in sdk.ops("network_interfaces.begin_delete"), 30,
                     "its NIC to be deleted")
            assert ("rg", name) in sdk.ops("virtual_machines.begin_delete")
            assert not [d for d, vm in sdk.disks.items() if d.startswith(name + "_")], "its disk is left"
            # not made again in a loop: it stays out of the cluster's spec
            assert "dedicated-0" not in cluster.worker_spec
            assert [a[1] for a in sdk.ops("virtual_machines.begin_create_or_update")].count(name) == 1
    finally:
        host.close()


def test_a_pool_without_docker_image_needs_a_wheel_store_before_any_vm(tmp_path):
    sdk = RecordingAzureSDK()
    options = {k: v for k, v in azure_options(LocalVMHost(), sdk, tmp_path).items()
               if not k.startswith("wheel_")}
    with pytest.raises(SpecError) as err:
        bnb.Pool("aznowheel", backend="azure", dedicated=1, ledger=Ledger(tmp_path / "l.sqlite"), **options)
    assert err.value.field == "wheel_store" and "abfs://" in str(err.value)
    assert sdk.calls == []


def test_wheel_is_reproducible_and_holds_this_batchnb(tmp_path):
    first, second = boot.build_wheel(tmp_path / "a"), boot.build_wheel(tmp_path / "b")
    assert first.name == f"batchnb-{bnb.__version__}-py3-none-any.whl"
    assert first.read_bytes() == second.read_bytes()
    assert boot.build_wheel(tmp_path / "a") == first                  # cached
    names = zipfile.ZipFile(first).namelist()
    assert "batchnb/__init__.py" in names and "batchnb/_static/pool.js" in names
    assert f"batchnb-{bnb.__version__}.dist-info/RECORD" in names
    assert not [n for n in names if "__pycache__" in n]
    # Azure's custom data holds 64 KB: the wheel travels through storage, not in cloud-init
    assert first.stat().st_size > 64 * 1024


def test_a_docker_image_is_checked_for_this_batchnb_before_anything_runs():
    pins = boot.driver_pins()
    text = boot.cloud_init('env X="1" python -m distributed.cli.dask_spec tls://10.0.0.4:8786 --spec '
                           "''{\"cls\": \"dask.distributed.Nanny\"}''", root="/opt/batchnb", pins=pins,
                           wheel_url=None, wheel_sha=None, start=["sh /mnt/batch/tasks/n/startup/starttask.sh"],
                           env_vars={}, extra_bootstrap=None, apt=True, auto_shutdown=True,
                           docker_image="me/app:1", docker_args="-v /mnt/batch/tasks:/mnt/batch/tasks")
    doc = yaml.safe_load(text)
    check, start, dask, shutdown = doc["runcmd"]
    dask_pin = next(p for p in pins if p.startswith("dask=="))
    assert "docker run --rm" in check and "me/app:1 python -c" in check
    assert f"batchnb=={bnb.__version__}" in check and dask_pin in check
    assert check.endswith("&& touch /opt/batchnb/ready")
    for line in (start, dask):
        assert line.startswith("[ -f /opt/batchnb/ready ] && docker run") and "me/app:1" in line
    assert "-v /mnt/batch/tasks:/mnt/batch/tasks" in start       # the start task sees the tasks' node root
    assert """--spec '{"cls": "dask.distributed.Nanny"}'""" in dask
    assert shutdown == "shutdown -h now"
