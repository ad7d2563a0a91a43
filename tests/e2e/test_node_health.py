"""Issue 11 point 4: node losses count toward node health; a vanished node is replaced;
a pool that can make no progress says so (PoolStalled), never a silent hang.

Real local pools; the faults are real (a task that kills its own worker process,
a node whose worker never comes back).
"""

from __future__ import annotations

import logging
import os

import dask
import pytest

import batchnb as bnb
from batchnb.extensions.nodehealth import NodeHealthExtension
from pools import temporary_pool
from waiting import wait_for


def kill_my_worker():
    # An inline Python task runs in its worker's process: this is a worker that keeps dying
    # (out of memory, a segfaulting library) whatever node it is on.
    os.kill(os.getpid(), 9)


@pytest.fixture
def quick_health():
    with dask.config.set({"batchnb.preempt-return-after": 0.5, "batchnb.unusable-after": 3,
                          "batchnb.max-node-losses": 3, "batchnb.stall-grace": 1}):
        yield


def test_a_task_that_kills_its_worker_every_time_fails_and_its_node_is_replaced(quick_health):
    with temporary_pool("crashloop", dedicated=1) as pool:
        job = pool.job("crashloop", max_task_retries=0)
        bad = job.submit(kill_my_worker, task_id="bad")
        result = job.wait(timeout=180, quiet=True)
        assert result.counts == {"failed": 1}
        assert bad.requeue_count == 3 and "lost under it 4 times" in bad.failure["message"]
        replaced = pool.extension(NodeHealthExtension).replaced
        assert replaced == [("dedicated-0", "dedicated-1")]
        states = {n.id: n.state for n in pool.nodes()}
        assert "dedicated-0" not in states or states["dedicated-0"] == "unusable"
        # The pool carries on with its new node.
        ok = job.add_task("ok", "echo fine")
        assert job.wait(timeout=60, quiet=True).counts == {"failed": 1, "succeeded": 1}
        assert ok.info().node == "dedicated-1"


def test_a_node_whose_worker_never_comes_back_is_replaced(quick_health):
    with dask.config.set({"batchnb.preempt-return-after": 3600, "batchnb.node-start-timeout": 8}):
        with temporary_pool("vanish", dedicated=0, spot=1) as pool:
            job = pool.job("vanish")
            t = job.add_task("t", "sleep 1; echo done")
            wait_for(lambda: t.state == bnb.TaskState.RUNNING, 30, "the task to start")
            pool.preempt("spot-0")           # and it is never restored (an hour away)
            result = job.wait(timeout=90, quiet=True)
            assert result.counts == {"succeeded": 1}
            assert t.info().node != "spot-0" and t.requeue_count == 1
            assert [old for old, _ in pool.extension(NodeHealthExtension).replaced][:1] == ["spot-0"]


def test_a_pool_with_no_usable_node_says_so_instead_of_hanging(quick_health, caplog):
    # Unusable nodes are not replaced here (as in Azure with no autoscale): after three worker
    # deaths its only node is unusable, the task waits with nowhere to run, and wait() says so.
    with dask.config.set({"batchnb.replace-unusable": False}):
        with temporary_pool("stall", dedicated=1) as pool:
            job = pool.job("stall", max_task_retries=0)
            bad = job.submit(kill_my_worker, task_id="bad")
            with caplog.at_level(logging.WARNING, logger="batchnb"):
                with pytest.raises(bnb.PoolStalled, match="no node that can run its tasks.*dedicated-0 unusable"):
                    job.wait(timeout=120, quiet=True)
            assert bad.state == bnb.TaskState.ACTIVE and bad.requeue_count == 3
            assert {n.id: n.state for n in pool.nodes()} == {"dedicated-0": "unusable"}
            assert any("cannot make progress" in r.getMessage() for r in caplog.records)


def test_the_job_view_shows_why_a_stalled_job_cannot_move(quick_health):
    from batchnb.ui.views import JobView
    with dask.config.set({"batchnb.replace-unusable": False}):
        with temporary_pool("stallview", dedicated=1) as pool:
            job = pool.job("stallview", max_task_retries=0)
            view = JobView(job)
            job.submit(kill_my_worker, task_id="bad")
            wait_for(lambda: "no node that can run its tasks" in view.problem, 120, "the view to show the stall")
            assert "dedicated-0 unusable" in view.problem and view.eta is None
            view.close()
