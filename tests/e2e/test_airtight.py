"""Issue 11, "airtight": the engine never blocks; what is shown ended has nothing running.

Real local pools: worker processes, real preemptions (SIGKILL of a worker process).
"""

from __future__ import annotations

import random
import threading
import time

import dask
import pytest

import batchnb as bnb
from pools import temporary_pool
from waiting import wait_for


@pytest.fixture
def fast_nodes():
    with dask.config.set({"batchnb.preempt-return-after": 0.5, "batchnb.result-timeout": 3}):
        yield


def test_a_storm_of_preemptions_never_blocks_preempt_and_every_task_succeeds(fast_nodes):
    """Preempt a spot node every 0.2-0.8 s while 400 tasks run: each preempt returns in under
    5 s (a kill sent to a dead worker used to wait out Dask's connect timeout on the
    dispatcher's thread), the dispatcher keeps answering, and every task succeeds."""
    rng = random.Random(11)
    with temporary_pool("storm", dedicated=1, spot=2, task_slots_per_node=2) as pool:
        job = pool.job("storm", max_task_retries=0)
        job.add_tasks([bnb.TaskSpec(f"t{i}", "sleep 0.05") for i in range(400)])
        slowest, preempts = 0.0, 0
        deadline = time.monotonic() + 120
        while _live(job):
            assert time.monotonic() < deadline, f"the job did not finish: {job.counts()}"
            victim = rng.choice(["spot-0", "spot-1"])
            t0 = time.monotonic()
            pool.preempt(victim)
            slowest = max(slowest, time.monotonic() - t0)
            preempts += 1
            t0 = time.monotonic()
            pool.nodes()                        # the dispatcher's thread still answers
            assert time.monotonic() - t0 < 5
            time.sleep(rng.uniform(0.2, 0.8))
        result = job.wait(timeout=60, quiet=True)
    assert preempts >= 3
    assert slowest < 5, f"a pool.preempt took {slowest:.1f}s"
    assert result.counts == {"succeeded": 400}
    assert sum(t.requeue_count for t in map(job.task, (f"t{i}" for i in range(400)))) >= 1


def _live(job) -> int:
    counts = job.counts()
    return counts["pending"] + counts["active"] + counts["running"]


def test_a_result_left_on_a_dead_worker_is_run_again_not_waited_for(fast_nodes):
    """A task finished on a node whose worker died before its result was fetched: fetching it
    would wait for good (its key is pinned to that worker). The dispatcher fetches results off
    its own thread and runs such a task again after batchnb.result-timeout."""
    with temporary_pool("lost-result", dedicated=0, spot=1) as pool:
        disp = pool._dispatcher
        hold = threading.Event()
        disp._gatherer.submit(hold.wait, 60)          # results wait behind this until released
        job = pool.job("lost", max_task_retries=0)
        t = job.add_task("t", "echo $AZ_BATCH_NODE_ID")
        wait_for(lambda: disp.call(lambda: bool(disp._gathering)), 30, "the finished task's result to be pending")
        pool._backend.preempt("spot-0")               # the worker holding the result dies, unannounced
        hold.set()
        t0 = time.monotonic()
        pool.nodes()                                  # the dispatcher answers meanwhile
        assert time.monotonic() - t0 < 5
        pool._backend.restore("spot-0")
        result = job.wait(timeout=60, quiet=True)
    assert result.counts == {"succeeded": 1}
    assert t.requeue_count == 1 and len(t.attempts) == 2
