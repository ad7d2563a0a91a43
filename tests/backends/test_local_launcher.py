"""Local nodes are forks of one warm launcher, not interpreters that each import Dask again.

The launcher (``batchnb.node.warmstart``) imports a worker's code once, while
the driver starts its scheduler; each node is then a fork of it, in a session
of its own. Nothing here times anything: what is checked is who started whom.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from pools import temporary_pool
from waiting import wait_for
from processes import alive

REPO = Path(__file__).resolve().parents[2]


def workers(pool) -> dict[str, int]:
    """Node id -> the pid of its worker process, as the workers themselves say."""
    names = {addr: w["name"] for addr, w in pool.client.scheduler_info()["workers"].items()}
    return {names[addr]: pid for addr, pid in pool.client.run(os.getpid, on_error="ignore").items() if addr in names}


def test_nodes_are_forks_of_one_launcher_started_by_the_driver():
    with temporary_pool("forks", dedicated=2) as pool:
        pids = workers(pool)
        assert sorted(pids) == ["dedicated-0", "dedicated-1"]
        parents = {psutil.Process(pid).ppid() for pid in pids.values()}
        assert len(parents) == 1 and os.getpid() not in parents, parents
        launcher = psutil.Process(parents.pop())
        assert launcher.ppid() == os.getpid()
        # Each node leads a session of its own (an interrupt of the driver's group misses it).
        assert all(os.getsid(pid) == pid for pid in pids.values())
        job = pool.job("runs")
        job.add_task("t", "echo hi")
        assert job.wait(quiet=True).counts == {"succeeded": 1}


def test_a_killed_launcher_takes_its_nodes_along_and_they_come_back_from_a_new_one():
    with temporary_pool("relaunch", dedicated=1) as pool:
        old = workers(pool)["dedicated-0"]
        launcher = psutil.Process(old).ppid()
        assert launcher != os.getpid()      # never kill the test itself
        os.kill(launcher, signal.SIGKILL)
        new = wait_for(lambda: (workers(pool).get("dedicated-0") or old) != old
                       and workers(pool)["dedicated-0"], 90, "dedicated-0 to come back")
        assert psutil.Process(new).ppid() not in (launcher, os.getpid())
        assert not alive(old)
        job = pool.job("after")
        job.add_task("t", "echo hi")
        assert job.wait(quiet=True).counts == {"succeeded": 1}


def run_fresh(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (this one imported Dask long ago); its output's lines."""
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180,
                             env={**os.environ, "BATCHNB_HOME": home})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_pool_starts_its_launcher_before_it_opens_its_ledger():
    code = """
import batchnb as bnb
import batchnb.pool
from batchnb.backends import _launch
seen = []
start = _launch.Launcher._start
def recording_start(self):
    seen.append("launcher")
    start(self)
_launch.Launcher._start = recording_start
open_ledger = batchnb.pool.default_ledger
def recording_ledger():
    seen.append("ledger")
    return open_ledger()
batchnb.pool.default_ledger = recording_ledger
with bnb.Pool("early", dedicated=1) as pool:
    job = pool.job("j")
    job.add_task("t", "echo hi")
    print(job.wait(quiet=True).counts)
print(seen)
"""
    assert run_fresh(code) == ["{'succeeded': 1}", "['launcher', 'ledger']"]


def test_the_launcher_starts_without_dask_in_the_driver_and_still_quiets_its_nodes():
    # Dask's settings are then the launcher's own (the same files and variables); it is told
    # only the level of its nodes' logs, which it sets before distributed reads it.
    code = """
import logging, sys
from batchnb.backends.local import LocalBackend
from batchnb.spec.model import PoolSpec
spec = PoolSpec(name="early", dedicated=1)
LocalBackend.warm_up(spec, {})
print("dask" in sys.modules)
backend = LocalBackend(spec)
client = backend.start()
print(set(client.run(lambda: logging.getLogger("distributed").level).values()) == {logging.ERROR})
client.close()
backend.close()
"""
    assert run_fresh(code) == ["False", "True"]


def test_a_node_forked_once_the_launcher_is_warm_has_what_its_first_tasks_import():
    from batchnb.node.warmstart import WARM
    with temporary_pool("warm", dedicated=1) as pool:
        launcher = pool._backend._launcher
        wait_for(launcher.warm.is_set, 120, "the launcher to import what nodes need")
        pids = workers(pool)
        # Forks of a process with threads may inherit locks held by threads they do not have.
        assert psutil.Process(psutil.Process(pids["dedicated-0"]).ppid()).num_threads() == 1
        pool.resize(dedicated=2)
        wait_for(lambda: "dedicated-1" in workers(pool), 120, "dedicated-1 to join")
        address = next(a for a, w in pool.client.scheduler_info()["workers"].items() if w["name"] == "dedicated-1")
        missing = pool.client.run(lambda: [m for m in WARM if m not in sys.modules], workers=[address])
        assert missing == {address: []}
        job = pool.job("runs")
        assert job.submit(sum, [1, 2]).result() == 3
