"""Detached pools on backends beyond this machine's processes (issue 13, point 1): Slurm, dask-gateway.

The agent runs on this machine and makes the pool with the same backend: for
Slurm it holds the Dask scheduler (as a driver on the login node would) and the
nodes are Slurm jobs; for a gateway the scheduler lives in the gateway and the
agent drives its cluster. Every test has a batchnb home of its own; the agents
its scripts start are stopped by pid in a finalizer (their records in that home
name them), and the Slurm jobs or gateway clusters of a test's pool go with them.
"""

from __future__ import annotations

import os
import signal

import pytest
from detached_agents import agent_records, end_script, note_agents, start_script, stop_agents
from waiting import wait_for

STARTUP = 240.0             # Slurm jobs or gateway workers, on a loaded 2-core machine


@pytest.fixture
def detached_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHNB_HOME", str(home))
    import batchnb.engine.ledger
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    noted: set = set()
    yield home, noted
    stop_agents(home, noted, timeout=60)


SLURM_CREATOR = """
    import sys
    import batchnb as bnb

    out = sys.argv[1]
    pool = bnb.Pool("hpc-detached", backend="slurm", dedicated=2, queue="debug", walltime="00:10:00", cores=1,
                    memory="1GB", host="127.0.0.1", nanny=False, detached=True)
    job = pool.job("mixed")
    job.add_tasks([{"id": f"c{i:02d}", "command": f"sleep 0.5; echo c{i:02d} >> {out}"} for i in range(20)])

    def cube(x):                  # defined in __main__: travels to the agent and the node by value
        return x ** 3

    job.submit(cube, 3, task_id="py")
    print("submitted", flush=True)
    job.wait()
"""

WATCHER = """
    import collections
    import sys
    import batchnb as bnb

    pool = bnb.Pool.connect(sys.argv[1])
    job = pool.job(sys.argv[2])
    result = job.wait(timeout=240, quiet=True)
    print("counts", sorted(result.counts.items()), flush=True)
    print("attempts", sorted(collections.Counter(len(job.task(t.id).attempts) for t in job.tasks()).items()),
          flush=True)
    if len(sys.argv) > 3:
        print("py", job.task(sys.argv[3]).result(), flush=True)
    pool.disconnect()
"""


def test_a_detached_slurm_pool_outlives_its_killed_creator_and_close_cancels_its_jobs(tmp_path, detached_home,
                                                                                     slurm):
    import batchnb as bnb
    home, noted = detached_home
    out = tmp_path / "out.txt"
    prefix = "bnb-hpc-detached-"
    creator = start_script(tmp_path, "creator", SLURM_CREATOR, home, str(out))
    try:
        try:
            wait_for(lambda: out.exists() or creator.poll() is not None, STARTUP, "the first task to run")
            assert creator.poll() is None, creator.stdout.read()
            note_agents(home, noted)
            # The agent holds the scheduler: the nodes are the pool's Slurm jobs, running.
            assert sorted(j["name"] for j in slurm.jobs(prefix, live=True)) == [prefix + "dedicated-0",
                                                                                prefix + "dedicated-1"]
            os.killpg(creator.pid, signal.SIGKILL)          # the driver dies, with everything in its group
            creator.wait(10)
        finally:
            end_script(creator)
        assert len(out.read_text().splitlines()) < 20, "the job was over before its creator was killed"
        [record] = agent_records(home)
        assert record["backend"] == "slurm" and record["address"].startswith("tls://127.0.0.1:")
        # The scheduler talks TLS with a temporary certificate that stays in the agent: said, not tried.
        assert "temporary certificate" in record["scheduler_unreachable"]
        pool = bnb.Pool.connect("hpc-detached")
        try:
            watcher = start_script(tmp_path, "watcher", WATCHER, home, "hpc-detached", "mixed", "py")
            try:
                text, _ = watcher.communicate(timeout=300)
            finally:
                end_script(watcher)
            lines = text.splitlines()
            assert "counts [('succeeded', 21)]" in lines, text
            assert "attempts [(1, 21)]" in lines, text
            assert "py 27" in lines, text
            assert sorted(out.read_text().split()) == [f"c{i:02d}" for i in range(20)]
            with pytest.raises(bnb.BackendError, match="temporary certificate"):
                _ = pool.client
            assert slurm.jobs(prefix, live=True)                # the nodes stay until the pool is closed
        finally:
            pool.close()
        wait_for(lambda: not slurm.jobs(prefix), 60, "the pool's Slurm jobs to leave squeue")
        assert bnb.pools() == []
    finally:
        stop_agents(home, noted, timeout=60)
        left = [j["id"] for j in slurm.jobs(prefix)]
        if left:            # an agent that had to be killed leaves its jobs: this test's own, cancelled
            slurm.run("scancel", *left, check=False)


GATEWAY_CREATOR = """
    import sys
    import batchnb as bnb
    from dask_gateway import BasicAuth

    address, user, password, out = sys.argv[1:5]
    pool = bnb.Pool("team-detached", backend="gateway", address=address, auth=BasicAuth(user, password),
                    dedicated=1, start_timeout=240, detached=True)
    job = pool.job("few")
    job.add_tasks([{"id": f"t{i}", "command": f"echo t{i} >> {out}"} for i in range(5)])
    pool.disconnect()
    print("left", flush=True)
"""


def test_a_detached_gateway_pool_runs_its_job_without_its_creator_and_close_stops_the_cluster(
        tmp_path, detached_home, gateway_server):
    from dask_gateway import Gateway

    import batchnb as bnb
    from batchnb.backends.gateway import _close_gateway

    def clusters() -> set[str]:
        gw = Gateway(gateway_server.address, auth=gateway_server.auth())
        try:
            return {c.name for c in gw.list_clusters()}
        finally:
            _close_gateway(gw)

    home, noted = detached_home
    out = tmp_path / "out.txt"
    before = clusters()
    creator = start_script(tmp_path, "creator", GATEWAY_CREATOR, home, gateway_server.address, gateway_server.user,
                      gateway_server.password, str(out))
    try:
        try:
            text, _ = creator.communicate(timeout=STARTUP + 60)
        finally:
            note_agents(home, noted)
            end_script(creator)
        assert text.splitlines()[-1:] == ["left"], text
        made = clusters() - before
        assert len(made) == 1, made             # the agent's cluster runs with no client of it left
        [record] = agent_records(home)
        assert record["backend"] == "gateway" and record["address"].startswith("tls://127.0.0.1:")
        watcher = start_script(tmp_path, "watcher", WATCHER, home, "team-detached", "few")
        try:
            text, _ = watcher.communicate(timeout=300)
        finally:
            end_script(watcher)
        assert "counts [('succeeded', 5)]" in text.splitlines(), text
        assert "attempts [(1, 5)]" in text.splitlines(), text
        pool = bnb.Pool.connect("team-detached")
        with pytest.raises(bnb.BackendError, match="gateway's credentials"):
            _ = pool.client
        pool.close()
        assert not clusters() & made                # the pool made the cluster: closing it shut it down
        assert bnb.pools() == []
    finally:
        stop_agents(home, noted, timeout=60)
        for name in clusters() - before:        # an agent that had to be killed leaves its cluster
            gw = Gateway(gateway_server.address, auth=gateway_server.auth())
            try:
                gw.stop_cluster(name)
            finally:
                _close_gateway(gw)


def test_a_detached_address_pool_drives_a_running_scheduler_and_leaves_it_running(detached_home):
    from distributed import LocalCluster

    import batchnb as bnb
    home, noted = detached_home
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0",
                      processes=True) as cluster:
        pool = bnb.Pool("elsewhere", backend="address", address=cluster.scheduler_address, detached=True)
        note_agents(home, noted)
        try:
            job = pool.job("there")
            t = job.add_task("hi", "echo $AZ_BATCH_NODE_ID")
            assert job.wait(timeout=120, quiet=True).ok
            assert t.stdout().strip() == pool.nodes()[0].id
            # Plain TCP: another process reaches the scheduler with no credentials to share.
            assert pool.client.scheduler.address == cluster.scheduler_address
        finally:
            pool.close()
        # The pool never made the scheduler: closing it leaves the scheduler and its worker.
        assert len(cluster.scheduler.workers) == 1


def test_a_detached_slurm_pool_with_tls_files_gives_other_processes_a_client_of_its_scheduler(tmp_path,
                                                                                              detached_home,
                                                                                              slurm):
    from distributed.security import Security

    import batchnb as bnb
    home, noted = detached_home
    made = Security.temporary()
    # One self-signed certificate for every role, written to files readable by their owner only.
    files = {}
    for field in ("tls_ca_file", "tls_client_cert", "tls_client_key"):
        path = tmp_path / field
        path.write_text(getattr(made, field))
        path.chmod(0o600)
        files[field] = str(path)
    security = Security(require_encryption=True, **files, tls_scheduler_cert=files["tls_client_cert"],
                        tls_scheduler_key=files["tls_client_key"], tls_worker_cert=files["tls_client_cert"],
                        tls_worker_key=files["tls_client_key"])
    prefix = "bnb-hpc-files-"
    pool = bnb.Pool("hpc-files", backend="slurm", dedicated=1, queue="debug", walltime="00:10:00", cores=1,
                    memory="1GB", host="127.0.0.1", nanny=False, security=security, detached=True)
    note_agents(home, noted)
    try:
        [record] = agent_records(home)
        assert record["scheduler_security"] == files and "scheduler_unreachable" not in record
        assert pool.client.scheduler.address.startswith("tls://127.0.0.1:")
        assert pool.client.submit(sum, [1, 2, 3], resources={"slots": 1}).result(timeout=60) == 6
    finally:
        pool.close()
        stop_agents(home, noted, timeout=60)
        left = [j["id"] for j in slurm.jobs(prefix)]
        if left:
            slurm.run("scancel", *left, check=False)
    wait_for(lambda: not slurm.jobs(prefix), 60, "the pool's Slurm jobs to leave squeue")
