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
    its own thread and runs such a task again after batchnb.result-timeout. The attempt had
    finished, so its node's loss is not counted as the task's doing (batchnb.max-node-losses)."""
    with temporary_pool("lost-result", dedicated=0, spot=1) as pool, dask.config.set({"batchnb.max-node-losses": 0}):
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
    assert result.counts == {"succeeded": 1}, [(a["node"], a["state"], a["category"], a["message"]) for a in t.attempts]
    assert t.requeue_count == 1 and len(t.attempts) == 2


def test_a_fetch_that_hangs_holds_up_no_later_result(fast_nodes):
    """A fetch stuck on a dead worker (a scheduler waiting out its connect timeout, ~30 s) sat
    in front of every later result: each expired in turn and ran again, queued behind the same
    stuck fetch (CI saw a task run nine times). Here the stuck fetch never ends during the test;
    the task's first result expires behind it, and its second is fetched on a new thread."""
    with temporary_pool("stuck-fetch", dedicated=1) as pool:
        stuck = threading.Event()
        pool._dispatcher._gatherer.submit(stuck.wait, 120)   # stands for the hung fetch
        try:
            job = pool.job("j", max_task_retries=0)
            t = job.add_task("t", "echo ok")
            result = job.wait(timeout=60, quiet=True)
        finally:
            stuck.set()
    assert result.counts == {"succeeded": 1}
    assert t.requeue_count == 1 and len(t.attempts) == 2
    assert "result-timeout" in t.attempts[0]["message"]


# -- point 2, "stopping means stopped": a Python task shown cancelled runs no more, and its
#    slot is free. Python tasks run inline, in a worker thread of a 1-slot node here.

def _sleep_then_write(started, path):
    import os
    import time as t
    from pathlib import Path
    Path(started).write_text(str(os.getpid()))
    t.sleep(3)                              # a C call: no exception reaches the thread inside it
    Path(path).write_text("x")


def _spin_then_write(started, path):
    import os
    import time as t
    from pathlib import Path
    Path(started).write_text(str(os.getpid()))
    end = t.monotonic() + 6
    while t.monotonic() < end:              # pure Python: stopped at its next bytecode
        pass
    Path(path).write_text("x")


def _now_and_pid():
    import os
    import time as t
    return t.time(), os.getpid()


@pytest.fixture
def one_slot():
    """One node of one slot, priced (1 node-second = 0.001 $) for the budget stop. A pool per
    test: a local node restarted twice about 15 s apart is closed for good by SpecCluster
    (its distributed.deploy.lost-worker-timeout check of the first loss meets the second)."""
    with temporary_pool("stops", dedicated=1, vm_size="Standard_X",
                        price_table={"Standard_X": {"dedicated": 3.6, "spot": 0.36}}) as pool:
        yield pool


def _started(pool, job, fn, tmp_path):
    started, out = tmp_path / "started", tmp_path / "out"
    task = job.submit(fn, str(started), str(out), task_id="victim")
    wait_for(lambda: started.exists() and started.read_text(), 60,
             f"the Python task to start (it is {task.state.value}; nodes {pool.nodes()})")
    return task, out, int(started.read_text())


def _next_task(pool, name):
    """A task of another job on the same 1-slot pool: when it began, and in which worker process."""
    return pool.job(name).submit(_now_and_pid).result(timeout=60)


def _never_written(out, since: float, seconds: float) -> bool:
    time.sleep(max(0.0, since + seconds - time.monotonic()))   # past the moment it would have been
    return not out.exists()


def test_a_terminated_python_task_in_a_c_call_never_reaches_its_side_effect(one_slot, tmp_path):
    """Blocked in time.sleep, the thread cannot take the exception: after batchnb.kill-grace its
    worker process is restarted (the nanny starts a fresh one), so nothing of it runs on."""
    job = one_slot.job("stop-sleep", max_task_retries=0)
    task, out, pid = _started(one_slot, job, _sleep_then_write, tmp_path)
    t0 = time.monotonic()
    time.sleep(0.5)
    job.terminate()
    assert task.state == bnb.TaskState.CANCELLED
    _, next_pid = _next_task(one_slot, "after-sleep")
    assert next_pid != pid                  # the process that held the thread is gone
    assert _never_written(out, t0, 4)
    assert [a["state"] for a in task.attempts] == ["terminated"]
    assert job.result().reason == "terminated"


def test_a_terminated_python_loop_stops_at_once_and_frees_its_slot(one_slot, tmp_path):
    job = one_slot.job("stop-spin", max_task_retries=0)
    task, out, pid = _started(one_slot, job, _spin_then_write, tmp_path)
    t0 = time.monotonic()
    time.sleep(0.5)
    asked = time.time()
    job.terminate()
    assert task.state == bnb.TaskState.CANCELLED
    began, next_pid = _next_task(one_slot, "after-spin")
    assert began - asked < 2, f"the next task began {began - asked:.1f}s after the terminate"
    assert next_pid == pid                  # stopped in its thread: no restart needed
    assert _never_written(out, t0, 6.5)


def test_a_jobs_wall_clock_stops_its_python_task(one_slot, tmp_path):
    job = one_slot.job("stop-wall", max_wall_clock="1.5s", max_task_retries=0)
    t0 = time.monotonic()
    task, out, _ = _started(one_slot, job, _sleep_then_write, tmp_path)
    assert job.wait(timeout=60, quiet=True).reason == "max_wall_clock"
    assert task.state == bnb.TaskState.CANCELLED
    _next_task(one_slot, "after-wall")
    assert _never_written(out, t0, 4)


def test_a_budget_stop_stops_its_python_task(one_slot, tmp_path):
    job = one_slot.job("stop-budget", budget=0.0015, max_task_retries=0)    # 1.5 s of the node
    t0 = time.monotonic()
    task, out, pid = _started(one_slot, job, _spin_then_write, tmp_path)
    assert job.wait(timeout=60, quiet=True).reason == "budget"
    assert task.state == bnb.TaskState.CANCELLED
    ended = one_slot.ledger.job("stop-budget")["ended"]
    began, next_pid = _next_task(one_slot, "after-budget")
    assert began - ended < 2, f"the next task began {began - ended:.1f}s after the budget stop"
    assert next_pid == pid
    assert _never_written(out, t0, 6.5)


def _nap_then_append(started, path):
    import time as t
    from pathlib import Path
    Path(started).touch()
    t.sleep(4)
    with open(path, "a") as fh:
        fh.write("x\n")
    return "done"


def test_the_restart_requeues_the_nodes_other_tasks_without_a_retry(tmp_path):
    """The worker restarted to stop a stuck task ran another job's task too: that task runs
    again (a requeue, not a failure or a retry), and only the second copy finishes."""
    with temporary_pool("stops-2", dedicated=1, task_slots_per_node=2) as pool:
        other = pool.job("bystander", max_task_retries=0)
        started, log = tmp_path / "bystander-started", tmp_path / "bystander.log"
        bystander = other.submit(_nap_then_append, str(started), str(log))
        job = pool.job("stop-shared", max_task_retries=0)
        victim, out, _ = _started(pool, job, _sleep_then_write, tmp_path)
        wait_for(started.exists, 60, "the other task to start")
        job.terminate()
        assert other.wait(timeout=90, quiet=True).counts == {"succeeded": 1}
        assert bystander.result() == "done" and bystander.requeue_count == 1
        assert [a["state"] for a in bystander.attempts] == ["requeued", "succeeded"]
        assert log.read_text() == "x\n"
        assert victim.state == bnb.TaskState.CANCELLED and not out.exists()
