"""The gateway backend against a real dask-gateway server (tests/services/gateway.py) on 127.0.0.1.

Workers start as processes of the gateway's local backend, so a node takes
seconds to join (tens under load): one pool of two nodes serves the job and
conformance checks, a second shows a resize from one node to two and that
closing shuts down the cluster it made, and a driver in a subprocess makes a
cluster, runs part of a job and is killed, as a notebook kernel dies, for the
re-attach check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import pytest

import batchnb as bnb
from batchnb.backends.gateway import _close_gateway
from batchnb.backends.testing import BackendConformance, states
from batchnb.engine.ledger import Ledger

from waiting import wait_for

STARTUP = 180.0          # a cluster, then worker processes, on a loaded 2-core machine
REPO = Path(__file__).resolve().parents[2]


def gateway_pool(server, name: str, ledger, **options) -> bnb.Pool:
    return bnb.Pool(name, backend="gateway", address=server.address, auth=server.auth(), ledger=str(ledger),
                    start_timeout=STARTUP, **options)


def running_clusters(server) -> set[str]:
    from dask_gateway import Gateway
    gw = Gateway(server.address, auth=server.auth())
    try:
        return {c.name for c in gw.list_clusters()}
    finally:
        _close_gateway(gw)


@pytest.fixture(scope="module")
def team(gateway_server, tmp_path_factory):
    """A gateway pool of two dedicated nodes, shared by the module's job and conformance checks
    (made, as the suite makes its own pools, with its nodes given STARTUP to join)."""
    with dask.config.set({"batchnb.node-start-timeout": f"{STARTUP}s"}), \
            gateway_pool(gateway_server, "team", tmp_path_factory.mktemp("team") / "ledger.sqlite",
                         dedicated=2) as pool:
        yield pool


def test_a_job_of_command_and_python_tasks_completes_on_a_gateway_pool(team):
    job = team.job("gateway-job", max_task_retries=0)
    a = job.add_task("a", 'echo "$AZ_BATCH_NODE_ID $AZ_BATCH_NODE_IS_DEDICATED"')
    b = job.add_task("b", "echo b; test -n \"$AZ_BATCH_TASK_WORKING_DIR\"", depends_on=["a"])
    square = job.submit(lambda x: x * x, 7)
    total = job.submit(lambda s, n: s + n, square, 1)       # a Python task depending on another
    result = job.wait(timeout=120, quiet=True)
    assert result.ok, result
    node, dedicated = a.stdout().split()
    assert node in {n.id for n in team.nodes()} and dedicated == "true"
    assert b.stdout().strip() == "b" and total.result() == 50
    assert {n.group for n in team.nodes()} == {"dedicated"}


def test_resize_from_one_node_to_two_shows_two_workers_and_close_shuts_the_cluster_down(gateway_server, tmp_path):
    with gateway_pool(gateway_server, "grow", tmp_path / "ledger.sqlite", dedicated=1) as pool:
        name = pool.client.cluster.name
        assert name in running_clusters(gateway_server)
        first = [n.id for n in pool.nodes()]
        assert len(first) == 1 and len(pool.client.scheduler_info()["workers"]) == 1
        pool.resize(dedicated=2)
        wait_for(lambda: len(pool.nodes()) == 2 and all(n.state == "idle" for n in pool.nodes()), STARTUP,
                 "a second node to join")
        workers = pool.client.scheduler_info()["workers"].values()
        assert sorted(w["name"] for w in workers) == sorted(n.id for n in pool.nodes())
        assert first[0] in {n.id for n in pool.nodes()}
    # The pool made the cluster, so closing the pool shut it down.
    assert name not in running_clusters(gateway_server)


DRIVER = textwrap.dedent("""
    import json, sys
    import batchnb as bnb
    from dask_gateway import BasicAuth

    address, user, password, ledger, out, gate = sys.argv[1:7]
    pool = bnb.Pool("reattach", backend="gateway", address=address, auth=BasicAuth(user, password),
                    dedicated=1, ledger=ledger, start_timeout=180)
    job = pool.job("reattach", max_task_retries=0)
    job.add_task("t0", f"echo t0 >> {out}")
    job.add_task("t1", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo t1 >> {out}", depends_on=["t0"])
    print(json.dumps({"cluster": pool.client.cluster.name, "nodes": [n.id for n in pool.nodes()]}), flush=True)
    sys.stdin.read()          # until the test kills this process, as a notebook kernel dies
""")


def test_a_second_process_reattaches_to_the_cluster_and_its_job(gateway_server, tmp_path):
    ledger, out, gate = tmp_path / "ledger.sqlite", tmp_path / "ran.txt", tmp_path / "gate"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, str(script), gateway_server.address, gateway_server.user,
                              gateway_server.password, str(ledger), str(out), str(gate)],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    name = None
    try:
        made = json.loads(first.stdout.readline() or "{}")
        assert made, f"the first driver exited ({first.poll()}) before making its pool"
        name = made["cluster"]
        led = Ledger(ledger)
        wait_for(lambda: led.job("reattach") and led.task_counts("reattach") == {"succeeded": 1, "running": 1},
                 120, "t0 done and t1 running in the first driver")
        first.send_signal(signal.SIGKILL)      # the kernel dies with its pool open
        first.wait(timeout=30)
        assert name in running_clusters(gateway_server)

        with gateway_pool(gateway_server, "reattach", ledger, cluster_name=name) as pool:
            assert pool.client.cluster.name == name
            assert sorted(n.id for n in pool.nodes()) == sorted(made["nodes"])
            job = pool.job("reattach")                 # the job, from the ledger, taken over
            assert {t.id: t.state for t in job.tasks()}["t0"] == "succeeded"
            gate.touch()
            result = job.wait(timeout=120, quiet=True)
            assert result.ok, result
            assert out.read_text().splitlines().count("t0") == 1      # done before the kill: not again
        # Attached, not made: closing the pool leaves the cluster running.
        assert name in running_clusters(gateway_server)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
        first.stdout.close()
        first.stdin.close()
        if name is not None:
            from dask_gateway import Gateway
            gw = Gateway(gateway_server.address, auth=gateway_server.auth())
            try:
                gw.stop_cluster(name)
            finally:
                _close_gateway(gw)


EXITS = textwrap.dedent("""
    import sys
    import batchnb as bnb
    from dask_gateway import BasicAuth

    address, user, password, ledger, keep = sys.argv[1:6]
    pool = bnb.Pool("exits", backend="gateway", address=address, auth=BasicAuth(user, password), dedicated=0,
                    ledger=ledger, shutdown_on_close={"default": None, "keep": False}[keep])
    print(pool.client.cluster.name, flush=True)
    # ends with the pool open, as a script or a kernel that shuts down does
""")


@pytest.mark.parametrize("keep", ["default", "keep"])
def test_a_pool_open_at_exit_shuts_down_the_cluster_it_made_unless_told_to_keep_it(gateway_server, tmp_path, keep):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", EXITS, gateway_server.address, gateway_server.user,
                          gateway_server.password, str(tmp_path / "ledger.sqlite"), keep],
                         env=env, capture_output=True, text=True, timeout=STARTUP)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    name = run.stdout.split()[0]
    try:
        assert (name in running_clusters(gateway_server)) == (keep == "keep")
    finally:
        if keep == "keep":
            from dask_gateway import Gateway
            gw = Gateway(gateway_server.address, auth=gateway_server.auth())
            try:
                gw.stop_cluster(name)
            finally:
                _close_gateway(gw)


def test_options_are_checked_when_given(gateway_server, tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    before = running_clusters(gateway_server)
    with pytest.raises(bnb.SpecError, match="did you mean 'cluster_name'"):
        gateway_pool(gateway_server, "bad", ledger, clustr_name="x")
    with pytest.raises(bnb.SpecError, match="spot: 1 is invalid: a dask-gateway cluster's workers are all dedicated"):
        gateway_pool(gateway_server, "bad", ledger, dedicated=1, spot=1)
    with pytest.raises(bnb.SpecError, match="task_slots_per_node: 4 is invalid: a gateway node's task slots are"):
        gateway_pool(gateway_server, "bad", ledger, dedicated=1, task_slots_per_node=4)
    with pytest.raises(bnb.SpecError, match=r"cluster_options\['worker_cors'\].*offers"):
        gateway_pool(gateway_server, "bad", ledger, dedicated=1, cluster_options={"worker_cors": 2})
    with pytest.raises(bnb.SpecError, match="cluster_name: 'no-such' is invalid: no running cluster of that name"):
        gateway_pool(gateway_server, "bad", ledger, cluster_name="no-such")
    with pytest.raises(bnb.SpecError, match="address"):
        bnb.Pool("bad", backend="gateway", address="127.0.0.1:1", ledger=str(ledger))
    assert running_clusters(gateway_server) == before          # nothing refused left a cluster behind


class TestGateway(BackendConformance):
    """The conformance suite, on the module's pool of two gateway workers."""

    name = "gateway"
    can_preempt = False
    startup = STARTUP

    @pytest.fixture(scope="class")
    def pool(self, team):
        # The gateway names its workers: the suite's node ids are theirs, once they joined.
        wait_for(lambda: len(states(team)) == 2, STARTUP, "two gateway workers")
        type(self).node_groups = {node_id: "dedicated" for node_id in states(team)}
        yield team

    def test_preempt_requeues_and_the_node_comes_back(self, up, job_id):
        # The suite preempts its first spot node; a gateway pool has none, and refuses for any node.
        node = next(iter(self.node_groups))
        with pytest.raises(bnb.BackendError, match="cannot preempt"):
            up.preempt(node)
        assert states(up)[node] == "idle"
