"""Local nodes are forks of one warm launcher, not interpreters that each import Dask again.

The launcher (``batchnb.node.warmstart``) imports a worker's code once, while
the driver starts its scheduler; each node is then a fork of it, in a session
of its own. Nothing here times anything: what is checked is who started whom.
"""

from __future__ import annotations

import os
import signal

import psutil
from pools import temporary_pool
from waiting import wait_for


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
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
        job = pool.job("after")
        job.add_task("t", "echo hi")
        assert job.wait(quiet=True).counts == {"succeeded": 1}
