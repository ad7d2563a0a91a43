"""A remote pool's scheduler VM is billed, apart from its nodes (issue 12, point 6).

An Azure pool (VMs played by ``LocalVMHost``, the management API by the
recording stand-in ``RecordingAzureSDK``: tests/azure_standin.py) whose
scheduler runs on a VM of another size than its nodes, at round prices:
3600 $/h a node (1 $ a second) and 7200 $/h the scheduler VM (2 $ a second).
"""

from __future__ import annotations

import time

import pytest

import batchnb as bnb
from batchnb.cost import cost_from_ledger
from batchnb.engine.ledger import Ledger
from waiting import wait_for

from azure_standin import LocalVMHost, RecordingAzureSDK
from test_azure_backend import azure_options, states

PRICES = {"Standard_X": {"dedicated": 3600.0, "spot": 3600.0}, "Standard_S": {"dedicated": 7200.0}}


def test_the_scheduler_vm_is_billed_for_the_pools_life_as_a_line_of_its_own(tmp_path):
    host = LocalVMHost()
    sdk = RecordingAzureSDK(host)
    asked = time.time()
    try:
        pool = bnb.Pool("azcost", backend="azure", vm_size="Standard_X", scheduler_vm_size="Standard_S",
                        price_table=PRICES, dedicated=1, ledger=Ledger(tmp_path / "l.sqlite"),
                        **azure_options(host, sdk, tmp_path))
        try:
            made = time.time()
            uuid = pool._backend.cluster.uuid
            # What is billed is what was asked of Azure.
            scheduler_vm = sdk.vm_requests()[f"dask-{uuid}-scheduler"]
            assert scheduler_vm["properties"]["hardwareProfile"] == {"vmSize": "Standard_S"}
            wait_for(lambda: states(pool) == {"dedicated-0": "idle"}, 60, "the node's VM to boot")
            job = pool.job("work")
            job.add_task("t", "sleep 0.5")
            assert job.wait(timeout=60).ok
            now = time.time()
            c = pool.cost(now)
            # Billed from when the pool asked for its scheduler VM, before Pool(...) returned.
            assert 2 * (now - made) < c.by_group["scheduler"] <= 2 * (now - asked)
            assert c.node_seconds["scheduler"] == pytest.approx(c.by_group["scheduler"] / 2)
            assert c.total == pytest.approx(c.by_group["dedicated"] + c.by_group["spot"] + c.by_group["scheduler"])
            assert c.idle == pytest.approx(c.by_group["dedicated"] + c.by_group["spot"] - c.busy)
            assert sum(c.by_tag("team").values()) == pytest.approx(c.total)
            assert c.rate_per_hour == pytest.approx(3600.0 + 7200.0)
            assert "scheduler=" in repr(c) and "scheduler VM" in c._repr_html_()
            # A job pays for what its tasks held; the scheduler is the pool's.
            assert "scheduler" not in job.cost().by_group
            # The node is billed from its VM's request too, not from when its worker joined.
            rows = [r for r in pool.ledger.node_history("azcost") if r["node_id"] == "dedicated-0"]
            assert rows[0]["state"] == "starting" and rows[0]["time"] < made
        finally:
            pool.close()
        closed = time.time()
        after = pool.cost()
        assert after.rate_per_hour == 0
        assert after.by_group["scheduler"] <= 2 * (closed - asked)
        assert pool.cost(closed + 100).by_group["scheduler"] == after.by_group["scheduler"]
        # The ledger keeps what the scheduler VM was priced at, from when: a replay agrees.
        again = cost_from_ledger(pool.ledger, pool="azcost")
        assert again.by_group["scheduler"] == pytest.approx(after.by_group["scheduler"], rel=0.01)
        assert again.total == pytest.approx(after.total, rel=0.01)
    finally:
        host.close()
