"""A detached pool on the Azure backend (issue 13, point 1): its agent makes and deletes the VMs.

The agent runs on this machine, beside the notebook, as it does for Slurm and
dask-gateway pools: it is given the pool's Azure management clients (here the
recording stand-in of tests/azure_standin.py, pickled in its boot message) and
makes the scheduler VM and the node VMs itself, so the VMs' processes (played
by ``LocalVMHost``, each one's cloud-init run in a clean environment) are the
agent's. The creator is SIGKILLed mid-job; the job finishes with no process of
the user's running; another process connects and finds every task succeeded
once; ``pool.close()`` deletes every VM. The stand-in's journal file holds what
the agent's copy did: every SDK call, every VM process (stopped by pid after
the test if an agent died with them).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest
from azure_journal import journal_calls, journal_entries, stop_journaled_vms
from azure_standin import vm_bootstrap_dir, vm_wheel_store
from azurite_fixture import free_port
from detached_agents import agent_records, end_script, note_agents, start_script, stop_agents
from waiting import wait_for

STARTUP = 240.0             # the scheduler VM and two node VMs boot (a wheel install each), 2 loaded cores
TASKS = 10


@pytest.fixture
def azure_home(tmp_path, monkeypatch):
    """A batchnb home and a stand-in journal; after the test its agents are stopped, then any VM
    process an agent left behind (by the pids the journal holds)."""
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHNB_HOME", str(home))
    import batchnb.engine.ledger
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    journal = tmp_path / "azure.jsonl"
    noted: set = set()
    yield home, journal, noted
    try:
        stop_agents(home, noted, timeout=120)
    finally:
        stop_journaled_vms(journal)


def _options(tmp_path: Path) -> dict:
    store, store_options = vm_wheel_store()
    return dict(location="westeurope", resource_group="rg", vnet="vnet", security_group="nsg",
                subscription_id="00000000-0000-0000-0000-000000000000", auto_shutdown=False, bootstrap_dir=vm_bootstrap_dir(),
                wheel_store=store, wheel_storage_options=store_options,
                scheduler_options={"host": "127.0.0.1", "port": free_port(), "dashboard_address": "127.0.0.1:0"},
                worker_options={"host": "127.0.0.1"}, node_root=str(tmp_path / "nodes"),
                scheduled_events_poll=0.2, eviction_grace=0.5, start_timeout=120)


CREATOR = """
    import json
    import sys
    import batchnb as bnb
    from azure_standin import LocalVMHost, RecordingAzureSDK

    options, journal, out, tasks = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    host = LocalVMHost(journal=journal)
    pool = bnb.Pool("cloud", backend="azure", vm_size="Standard_D2s_v5", dedicated=2, detached=True,
                    azure_sdk=RecordingAzureSDK(host, journal=journal), scheduled_events_url=host.url,
                    **options)
    job = pool.job("render")
    job.add_tasks([{"id": f"t{i:02d}", "command": f"sleep 1; echo t{i:02d} >> {out}"} for i in range(tasks)])
    print("submitted", flush=True)
    job.wait()
"""

WATCHER = """
    import collections
    import sys
    import batchnb as bnb

    pool = bnb.Pool.connect("cloud")
    job = pool.job("render")
    result = job.wait(timeout=240, quiet=True)
    print("counts", sorted(result.counts.items()), flush=True)
    print("attempts", sorted(collections.Counter(len(job.task(t.id).attempts) for t in job.tasks()).items()),
          flush=True)
    print("nodes", sorted({t.node for t in job.tasks()}), flush=True)
    print("cost", sorted(g for g, v in pool.cost().by_group.items() if v > 0), flush=True)
    pool.disconnect()
"""


def _alive(entry: dict) -> bool:
    try:
        return psutil.Process(entry["pid"]).create_time() == entry["created"]
    except psutil.Error:
        return False


@pytest.mark.timeout(900)
def test_a_detached_azure_pool_makes_its_vms_in_its_agent_outlives_its_killed_creator_and_close_deletes_them(
        tmp_path, azure_home):
    import batchnb as bnb
    home, journal, noted = azure_home
    out = tmp_path / "out.txt"
    creator = start_script(tmp_path, "creator", CREATOR, home, json.dumps(_options(tmp_path)), str(journal), str(out),
                      str(TASKS))
    try:
        wait_for(lambda: out.exists() or creator.poll() is not None, STARTUP, "the first task to run")
        assert creator.poll() is None, creator.stdout.read()
        note_agents(home, noted)
        os.killpg(creator.pid, signal.SIGKILL)          # the driver dies, with everything in its group
        creator.wait(10)
    finally:
        end_script(creator)
    assert len(out.read_text().splitlines()) < TASKS, "the job was over before its creator was killed"
    [record] = agent_records(home)
    assert record["backend"] == "azure" and record["scheduler"].startswith("tls://127.0.0.1:")
    # The agent made the VMs: their processes are its (the creator, killed, made none).
    made = journal_calls(journal, "virtual_machines.begin_create_or_update")
    vms = sorted(args[1] for args in made)
    assert len(vms) == 3 and sum(v.endswith("-scheduler") for v in vms) == 1, vms
    booted = [e for e in journal_entries(journal) if "pid" in e]
    assert {e["vm"] for e in booted} == set(vms)
    assert all(_alive(e) for e in booted)
    agent = psutil.Process(record["pid"])
    assert {e["pid"] for e in booted} <= {p.pid for p in agent.children()}
    # The scheduler's TLS certificate is a temporary one, held by the agent: said, not tried.
    assert "temporary certificate" in record["scheduler_unreachable"]

    watcher = start_script(tmp_path, "watcher", WATCHER, home)
    try:
        text, _ = watcher.communicate(timeout=300)
    finally:
        end_script(watcher)
    lines = text.splitlines()
    assert f"counts [('succeeded', {TASKS})]" in lines, text
    assert f"attempts [(1, {TASKS})]" in lines, text
    [nodes] = [line for line in lines if line.startswith("nodes ")]
    assert set(eval(nodes[len("nodes "):])) <= {"dedicated-0", "dedicated-1"}, text
    assert sorted(out.read_text().split()) == [f"t{i:02d}" for i in range(TASKS)]
    assert not journal_calls(journal, "virtual_machines.begin_delete")     # the VMs stay until close

    pool = bnb.Pool.connect("cloud")
    pool.close()
    deleted = sorted(args[1] for args in journal_calls(journal, "virtual_machines.begin_delete"))
    assert deleted == vms
    nics = {args[1] for args in journal_calls(journal, "network_interfaces.begin_create_or_update")}
    assert {args[1] for args in journal_calls(journal, "network_interfaces.begin_delete")} == nics
    assert not any(_alive(e) for e in booted)
    assert not agent.is_running() or agent.status() == psutil.STATUS_ZOMBIE
    assert bnb.pools() == []


STARTER = """
    import json
    import sys
    import batchnb as bnb
    from azure_standin import LocalVMHost, RecordingAzureSDK

    options, journal, gate = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    host = LocalVMHost(journal=journal, boot_gate=gate)
    try:
        bnb.Pool("cloud", backend="azure", vm_size="Standard_D2s_v5", dedicated=1, detached=True,
                 azure_sdk=RecordingAzureSDK(host, journal=journal), scheduled_events_url=host.url, **options)
    except bnb.BatchError as exc:
        print("refused", type(exc).__name__, exc, flush=True)
"""


@pytest.mark.timeout(600)
def test_an_azure_agent_stopped_while_its_scheduler_vm_boots_deletes_what_it_made(tmp_path, azure_home):
    import batchnb as bnb
    from batchnb.agent.registry import alive
    home, journal, noted = azure_home
    gate = tmp_path / "provisioned"
    starter = start_script(tmp_path, "starter", STARTER, home, json.dumps(_options(tmp_path)), str(journal), str(gate))
    try:
        # The scheduler VM is asked for and held in provisioning (the gate) while the agent is told to stop.
        wait_for(lambda: journal_calls(journal, "virtual_machines.begin_create_or_update")
                 or starter.poll() is not None, STARTUP, "the scheduler VM to be asked for")
        assert starter.poll() is None, starter.stdout.read()
        [record] = agent_records(home)
        noted.add((record["pid"], record.get("process_created")))
        os.kill(record["pid"], signal.SIGTERM)   # an agent ended here would leave the VM, known to no one
        gate.touch()
        text, _ = starter.communicate(timeout=STARTUP)
    finally:
        end_script(starter)
    assert "refused BackendError" in text and "signal SIGTERM while the pool started" in text, text
    wait_for(lambda: not alive(record), 120, "the agent to end")
    made = sorted(args[1] for args in journal_calls(journal, "virtual_machines.begin_create_or_update"))
    assert made and sorted(args[1] for args in journal_calls(journal, "virtual_machines.begin_delete")) == made
    nics = {args[1] for args in journal_calls(journal, "network_interfaces.begin_create_or_update")}
    assert {args[1] for args in journal_calls(journal, "network_interfaces.begin_delete")} == nics
    assert journal_calls(journal, "public_ip_addresses.begin_delete")      # the scheduler's public IP
    assert not any(_alive(e) for e in journal_entries(journal) if "pid" in e)
    assert bnb.pools() == []


@pytest.mark.timeout(600)
def test_an_azure_agent_killed_while_it_starts_is_said_so_and_leaves_its_vm_requested(tmp_path, azure_home):
    home, journal, noted = azure_home
    gate = tmp_path / "provisioned"
    starter = start_script(tmp_path, "starter", STARTER, home, json.dumps(_options(tmp_path)), str(journal), str(gate))
    try:
        wait_for(lambda: journal_calls(journal, "virtual_machines.begin_create_or_update")
                 or starter.poll() is not None, STARTUP, "the scheduler VM to be asked for")
        assert starter.poll() is None, starter.stdout.read()
        [record] = agent_records(home)
        noted.add((record["pid"], record.get("process_created")))
        os.kill(record["pid"], signal.SIGKILL)
        text, _ = starter.communicate(timeout=120)
    finally:
        gate.touch()
        end_script(starter)
    # The creator says how its agent ended (it said "no answer in time" when the pipe closed first).
    assert "refused BackendError" in text and "did not start (exit code -9)" in text, text
    # What the README says: a killed agent deletes nothing; the VM is left to its resource group.
    assert len(journal_calls(journal, "virtual_machines.begin_create_or_update")) == 1
    assert not journal_calls(journal, "virtual_machines.begin_delete")
