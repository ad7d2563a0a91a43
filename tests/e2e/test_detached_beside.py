"""A detached gateway pool whose agent runs beside its scheduler (issue 13, point 1).

A real dask-gateway server (tests/services/gateway.py) runs the cluster's
scheduler and worker processes in a folder of its own. The creator, a script
with a batchnb home of its own, makes the pool with ``agent_on_scheduler=True``
and leaves: no agent process runs on its side and its home holds no ledger,
only the pool's record (no pid; the address and the cluster's credentials),
by which ``bnb.pools()`` lists it and ``bnb.Pool.connect(name)`` reaches it. A
watcher with another home reaches the pool through the gateway's TLS proxy
with the cluster's credentials (``Gateway.connect``), sees the job finish,
and opens none of the files of the pool, which are in the cluster's folder.
Closing the pool shuts the cluster down, and the creator's home prunes the
record of an agent that no longer answers; a cluster left by a failed test
is stopped through the gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys

from detached_agents import agent_records, end_script, script_env, start_script

CREATOR = """
    import sys
    import batchnb as bnb
    from dask_gateway import BasicAuth

    address, user, password = sys.argv[1:4]
    pool = bnb.Pool("team-beside", backend="gateway", address=address, auth=BasicAuth(user, password),
                    dedicated=1, start_timeout=240, agent_on_scheduler=True, detached=True)
    job = pool.job("few")
    job.add_tasks([{"id": f"t{i}", "command": f"echo t{i}"} for i in range(5)])

    def cube(x):                  # defined in __main__: travels by value to the scheduler's agent and the node
        return x ** 3

    job.submit(cube, 3, task_id="py")
    print("cluster", pool._record["cluster_name"], flush=True)
    pool.disconnect()
    print("left", flush=True)
"""

WATCHER = r'''
import json, os, sys
seen = []

def hook(event, args):
    if event in ("open", "sqlite3.connect") and isinstance(args[0], (str, bytes, os.PathLike)):
        seen.append(os.path.abspath(os.fsdecode(args[0])))
sys.addaudithook(hook)

import batchnb as bnb
from dask_gateway import BasicAuth, Gateway

address, user, password, name = sys.argv[1:5]
gateway = Gateway(address, auth=BasicAuth(user, password))
cluster = gateway.connect(name)
pool = bnb.Pool.connect(cluster.scheduler_address, security=cluster.security)
try:
    job = pool.job("few")
    result = job.wait(timeout=240, quiet=True)
    out = {"counts": result.counts, "stdout": job.task("t3").stdout(), "ledger": str(pool.ledger.path),
           "py": job.task("py").result(),
           "backend": pool.spec.backend, "address": pool.address}
finally:
    pool.disconnect()
print("RESULT " + json.dumps({"out": out, "seen": seen}))
'''


def _clusters(server) -> set[str]:
    from dask_gateway import Gateway

    from batchnb.backends.gateway import _close_gateway
    gw = Gateway(server.address, auth=server.auth())
    try:
        return {c.name for c in gw.list_clusters()}
    finally:
        _close_gateway(gw)


def _stop_clusters_left(server, before: set[str]) -> None:
    """Stop, through the gateway, the clusters a failed test left (those not there before it)."""
    from dask_gateway import Gateway

    from batchnb.backends.gateway import _close_gateway
    for left in _clusters(server) - before:
        gw = Gateway(server.address, auth=server.auth())
        try:
            gw.stop_cluster(left)
        finally:
            _close_gateway(gw)


def test_a_gateway_pools_agent_runs_in_its_scheduler_and_a_client_elsewhere_reads_through_the_proxy(
        tmp_path, gateway_server, monkeypatch):
    import batchnb as bnb
    from batchnb.backends.gateway import _close_gateway
    from dask_gateway import Gateway

    creator_home = tmp_path / "creator-home"
    before = _clusters(gateway_server)
    creator = start_script(tmp_path, "creator", CREATOR, creator_home, gateway_server.address, gateway_server.user,
                           gateway_server.password)
    try:
        try:
            text, _ = creator.communicate(timeout=300)
        finally:
            end_script(creator)
        assert text.splitlines()[-1:] == ["left"], text
        name = next(line.split()[1] for line in text.splitlines() if line.startswith("cluster "))
        assert _clusters(gateway_server) - before == {name}
        # No agent process and no ledger on the creator's side: only the pool's record.
        records = agent_records(creator_home)
        assert [(r["name"], r["pid"], r["address"].startswith("gateway://")) for r in records] == [
            ("team-beside", None, True)]
        assert not (creator_home / "ledger.sqlite").exists()
        folder = gateway_server.clusters / name
        assert (folder / "batchnb" / "ledger.sqlite").is_file()

        script = tmp_path / "watcher.py"
        script.write_text(WATCHER)
        done = subprocess.run([sys.executable, str(script), gateway_server.address, gateway_server.user,
                               gateway_server.password, name], capture_output=True, text=True, cwd=tmp_path,
                              env=script_env(tmp_path / "watcher-home"), timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        got = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])
        out = got["out"]
        assert out["counts"] == {"succeeded": 6} and out["stdout"] == "t3\n" and out["py"] == 27, out
        assert out["backend"] == "gateway" and out["address"].startswith("gateway://")
        assert out["ledger"] == str(folder / "batchnb" / "ledger.sqlite")
        assert [p for p in got["seen"] if p.startswith(str(folder))] == []

        with monkeypatch.context() as mp:          # the creator's home reaches it by name
            mp.setenv("BATCHNB_HOME", str(creator_home))
            assert [p["name"] for p in bnb.pools()] == ["team-beside"]
            by_name = bnb.Pool.connect("team-beside")
            assert by_name.job("few").counts()["succeeded"] == 6
            by_name.disconnect()

        gateway = Gateway(gateway_server.address, auth=gateway_server.auth())
        try:
            cluster = gateway.connect(name)
            try:
                pool = bnb.Pool.connect(cluster.scheduler_address, security=cluster.security)
                assert pool.job("few").counts()["succeeded"] == 6
                pool.close()            # the pool made the cluster: closing it shuts the cluster down
            finally:
                cluster.close(shutdown=False)
                _close_gateway(cluster.gateway)
        finally:
            _close_gateway(gateway)
        assert name not in _clusters(gateway_server)
        with monkeypatch.context() as mp:          # its agent answers no more: its record is pruned
            mp.setenv("BATCHNB_HOME", str(creator_home))
            assert bnb.pools() == [] and agent_records(creator_home) == []
    finally:
        _stop_clusters_left(gateway_server, before)


def test_agent_on_scheduler_is_refused_at_once_where_it_cannot_be(tmp_path, monkeypatch):
    import pytest

    import batchnb as bnb
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    with pytest.raises(bnb.SpecError, match="needs detached=True") as err:
        bnb.Pool("in-kernel", backend="gateway", address="http://127.0.0.1:9", agent_on_scheduler=True)
    assert err.value.field == "agent_on_scheduler"
    with pytest.raises(bnb.SpecError, match="only a gateway or an address pool") as err:
        bnb.Pool("here", backend="local", agent_on_scheduler=True, detached=True)
    assert err.value.field == "agent_on_scheduler"
    with pytest.raises(bnb.SpecError, match="True or False") as err:
        bnb.Pool("there", backend="gateway", address="http://127.0.0.1:9", agent_on_scheduler="yes", detached=True)
    assert agent_records(tmp_path / "home") == []


def test_an_idle_agent_in_a_gateway_scheduler_stops_itself_and_leaves_the_cluster_it_was_told_to_keep(
        tmp_path, gateway_server, monkeypatch):
    import dask

    import batchnb as bnb
    import batchnb.engine.ledger
    from batchnb.engine.ledger import Ledger
    from waiting import wait_for
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    before = _clusters(gateway_server)
    try:
        with dask.config.set({"batchnb.agent-idle-timeout": "2s"}):     # the creator's: it travels in the plugin
            pool = bnb.Pool("team-idle", backend="gateway", address=gateway_server.address,
                            auth=gateway_server.auth(), dedicated=1, start_timeout=240, shutdown_on_close=False,
                            agent_on_scheduler=True, detached=True)
        name = pool._record["cluster_name"]
        assert pool.job("quick").add_task("a", "echo a") and pool.job("quick").wait(timeout=240, quiet=True).ok
        pool.disconnect()
        wait_for(lambda: bnb.pools() == [], 120, "the idle agent to stop (its record pruned)")
        assert name in _clusters(gateway_server)        # shutdown_on_close=False: the cluster stays
        ledger = Ledger(gateway_server.clusters / name / "batchnb" / "ledger.sqlite")
        stops = [json.loads(e["data"]) for e in ledger.events() if e["kind"] == "pool" and e["state"] == "stopped"]
        assert len(stops) == 1 and stops[0]["reason"].startswith("idle"), stops
        assert "agent-idle-timeout" in stops[0]["reason"]
    finally:
        _stop_clusters_left(gateway_server, before)
