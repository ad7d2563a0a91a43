"""A detached Azure pool whose agent runs on its scheduler VM (issue 13, point 1: "beside the scheduler").

The creator makes the scheduler VM only (with a managed identity, given
Contributor on the resource group) and starts the agent in that VM's
scheduler process; the agent makes the node VM with the VM's identity. The
Azure management API is the recording stand-in of tests/azure_standin.py;
its VMs are played by ``LocalVMHost`` (each one's cloud-init run in a clean
environment, from the wheel shipped through Azurite), and the stand-in's
copy in the scheduler VM's process reaches it pickled by value (that VM's
venv cannot import tests/). The creator is SIGKILLed mid-job; the job ends
with no process of the creator's left; another process connects by name and
finds each task succeeded once; ``pool.close()`` has the agent delete its node
VM and then its own VM. The journal says which process asked for what.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from azure_journal import journal_calls, journal_entries, stop_journaled_vms
from detached_agents import end_script, start_script
from waiting import wait_for

from .test_detached_azure import WATCHER, _alive, _options

STARTUP = 300.0             # the scheduler VM (a wheel install, the agent's packages) then a node VM
TASKS = 10


@pytest.fixture
def azure_home(tmp_path, monkeypatch):
    """A batchnb home and a stand-in journal; after the test any VM process left behind is stopped
    by the pids the journal holds (the agent's own process is the scheduler VM's)."""
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHNB_HOME", str(home))
    import batchnb.engine.ledger
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    journal = tmp_path / "azure.jsonl"
    try:
        yield home, journal
    finally:
        stop_journaled_vms(journal)


CREATOR = """
    import json
    import sys
    import cloudpickle
    import batchnb as bnb
    import azure_journal, azure_standin
    from azure_standin import LocalVMHost, RecordingAzureSDK

    # The scheduler VM's venv holds batchnb, not this test's helpers: they travel by value.
    cloudpickle.register_pickle_by_value(azure_standin)
    cloudpickle.register_pickle_by_value(azure_journal)
    options, journal, out, tasks = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    host = LocalVMHost(journal=journal)
    pool = bnb.Pool("cloud", backend="azure", vm_size="Standard_D2s_v5", dedicated=1, detached=True,
                    agent_on_scheduler=True, azure_sdk=RecordingAzureSDK(host, journal=journal),
                    scheduled_events_url=host.url, **options)
    print("vmhome", host.home, flush=True)
    job = pool.job("render")
    job.add_tasks([{"id": f"t{i:02d}", "command": f"sleep 1; echo t{i:02d} >> {out}"} for i in range(tasks)])
    print("submitted", flush=True)
    job.wait()
"""

@pytest.mark.timeout(900)
def test_an_azure_pools_agent_on_its_scheduler_vm_makes_its_nodes_outlives_its_creator_and_deletes_itself(
        tmp_path, azure_home):
    import batchnb as bnb
    home, journal = azure_home
    out = tmp_path / "out.txt"
    options = dict(_options(tmp_path), start_timeout=240)
    creator = start_script(tmp_path, "creator", CREATOR, home, json.dumps(options), str(journal),
                           str(out), str(TASKS))
    try:
        wait_for(lambda: out.exists() or creator.poll() is not None, STARTUP, "the first task to run")
        assert creator.poll() is None, creator.stdout.read()
        os.killpg(creator.pid, signal.SIGKILL)          # the driver dies, with everything in its group
        creator.wait(10)
    finally:
        end_script(creator)
    assert len(out.read_text().splitlines()) < TASKS, "the job was over before its creator was killed"
    [record] = bnb.pools()
    assert record["backend"] == "azure" and record["pid"] is None     # no process of this machine
    assert record["ledger"].startswith(options["bootstrap_dir"] + "/agent-")      # on the VM's disk
    vms = {e["vm"]: e for e in journal_entries(journal) if "pid" in e}
    [scheduler_vm] = [v for v in vms if v.endswith("-scheduler")]
    [node_vm] = [v for v in vms if v != scheduler_vm]
    assert node_vm.endswith("-dedicated-0")
    made = {args[1]: (args, e) for e in journal_entries(journal) if e.get("op") ==
            "virtual_machines.begin_create_or_update" for args in [e["args"]]}
    # The creator asked for the scheduler VM, with an identity and its disk and NIC going with it ...
    sched_request = made[scheduler_vm][0][2]
    assert sched_request["identity"] == {"type": "SystemAssigned"}
    assert sched_request["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert made[scheduler_vm][1]["caller_group"] != vms[scheduler_vm]["pid"]
    # ... and gave that identity Contributor on the resource group ...
    [(scope, _, body)] = journal_calls(journal, "role_assignments.create")
    assert scope == "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg"
    assert body["properties"]["roleDefinitionId"].endswith("/b24988ac-6180-42dd-9ca3-a21e5a4c5b1b")
    # ... while the node VM was asked for from the scheduler VM's own processes (its agent).
    assert "identity" not in made[node_vm][0][2]
    assert made[node_vm][1]["caller_group"] == vms[scheduler_vm]["pid"]
    assert len(made) == 2 and all(_alive(e) for e in vms.values())

    watcher = start_script(tmp_path, "watcher", WATCHER, home)
    try:
        text, _ = watcher.communicate(timeout=300)
    finally:
        end_script(watcher)
    lines = text.splitlines()
    assert f"counts [('succeeded', {TASKS})]" in lines, text
    assert f"attempts [(1, {TASKS})]" in lines, text
    assert "nodes ['dedicated-0']" in lines, text
    assert "cost ['dedicated', 'scheduler']" in lines, text      # the scheduler VM's own line stays
    assert sorted(out.read_text().split()) == [f"t{i:02d}" for i in range(TASKS)]
    assert not journal_calls(journal, "virtual_machines.begin_delete")     # the VMs stay until close

    pool = bnb.Pool.connect("cloud")
    pool.close()
    deletes = [e for e in journal_entries(journal) if e.get("op") == "virtual_machines.begin_delete"]
    # The agent deleted its node, then its own VM, last; no VM is left in the journal's list.
    assert [e["args"][1] for e in deletes] == [node_vm, scheduler_vm]
    assert all(e["caller_group"] == vms[scheduler_vm]["pid"] for e in deletes)
    assert set(made) == {e["args"][1] for e in deletes}
    wait_for(lambda: not any(_alive(e) for e in vms.values()), 60, "the VMs' processes to end")
    assert bnb.pools() == []
    # Before it went, the agent said why in its ledger (the stand-in's VMs share this machine's disk).
    from batchnb.engine.ledger import Ledger
    stops = [json.loads(e["data"]) for e in Ledger(record["ledger"]).events()
             if e["kind"] == "pool" and e["state"] == "stopped"]
    assert [(d["pool"], d["reason"]) for d in stops] == [("cloud", "closed by a client")]
