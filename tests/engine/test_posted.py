"""job.submit and job.add_task without a dispatcher round trip per call (issue 17, points 2 and 3).

Real local pool. To show that a submit does not wait for the dispatcher, the
dispatcher's thread is held (a call posted to it that blocks on an event, for
at most ``HOLD`` seconds) while the test submits: a submit that waited for a
turn would be stuck until the hold gives up, which the test sees.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

import batchnb as bnb
from pools import temporary_pool

HOLD = 30.0


def step(x):
    return x + 1


@pytest.fixture(scope="module")
def pool():
    with temporary_pool("posted", dedicated=1) as p:
        yield p


@contextlib.contextmanager
def dispatcher_held(pool):
    """Hold the dispatcher's thread for the block; fail if the hold had to give up (something in
    the block waited for the dispatcher)."""
    entered, go, gave_up = threading.Event(), threading.Event(), []

    def hold():
        entered.set()
        if not go.wait(HOLD):
            gave_up.append(True)
    pool._dispatcher.post(hold)
    assert entered.wait(HOLD)
    try:
        yield
    finally:
        go.set()
    assert not gave_up, "a call in the block waited for the dispatcher"


def test_a_submit_loop_does_not_wait_for_the_dispatcher_and_the_next_read_shows_it(pool, unique):
    job = pool.job(unique)
    with dispatcher_held(pool):
        tasks = [job.submit(step, 0, task_id="c0")]
        for i in range(1, 100):
            tasks.append(job.submit(step, tasks[-1], task_id=f"c{i}"))
        cmd = job.add_task("cmd", "exit 0", depends_on=["c99"])
    # The read right after the loop shows every task, the last one too.
    assert job.task_counts().total == 101
    assert tasks[-1].state in (bnb.TaskState.PENDING, bnb.TaskState.ACTIVE, bnb.TaskState.RUNNING,
                               bnb.TaskState.SUCCEEDED)
    res = job.wait(quiet=True, timeout=300)
    assert res.ok and tasks[-1].result() == 100 and cmd.exit_code == 0
    for t in tasks + [cmd]:     # each its own task: one attempt row, succeeded, exit code 0
        (a,) = t.attempts
        assert (a["state"], a["exit_code"]) == ("succeeded", 0), (t.task_id, a)
    # Many submits made a handful of adds, not one ledger transaction and audit record each.
    adds = [r for r in pool.audit(job=unique) if r.action == "task-add"]
    assert sum(int(r.detail.split()[0]) for r in adds) == 101 and len(adds) < 20, adds


def test_bad_input_in_a_submit_loop_is_refused_at_the_call(pool, unique):
    job = pool.job(unique)
    with dispatcher_held(pool):
        first = job.submit(step, 0, task_id="b0")
        with pytest.raises(bnb.SpecError, match=r"max_wall_clock.*-1"):
            job.submit(step, first, task_id="b1", max_wall_clock=-1)
        with pytest.raises(bnb.SpecError, match=r"task id.*'b 2'"):
            job.submit(step, first, task_id="b 2")
        job.submit(step, first, task_id="b3")
    # What the dispatcher has to answer for takes the waited-for path, refused at the call too.
    with pytest.raises(bnb.SpecError, match="nope"):
        job.submit(step, 1, task_id="b4", depends_on=["nope"])
    with pytest.raises(bnb.SpecError, match="b3"):
        job.submit(step, 7, task_id="b3")           # the id of a task just submitted, another spec
    assert job.submit(step, first, task_id="b3").task_id == "b3"    # the same spec again: a no-op
    assert job.wait(quiet=True, timeout=120).ok
    assert sorted(t.id for t in job.tasks()) == ["b0", "b3"]


def test_a_queued_add_the_dispatcher_refuses_is_raised_at_the_next_read_with_its_dependents(pool, unique):
    job = pool.job(unique)
    x = job.submit(step, 1, task_id="x")
    disp = pool._dispatcher
    with dispatcher_held(pool):
        # Ended by the dispatcher after these adds were checked, before it makes them.
        disp.post(disp.terminate, job._run, "ended meanwhile", time.time())
        y = job.submit(step, x, task_id="y")
        job.submit(step, y, task_id="z")
    with pytest.raises(bnb.SpecError, match="accepts no more tasks"):
        job.task_counts()
    assert job.task_counts().total == 1             # raised once; y and z were not added
    assert [t.id for t in job.tasks()] == ["x"] and job.state == bnb.JobState.COMPLETED


def test_a_read_in_another_thread_shows_the_queued_adds_too(pool, unique):
    job = pool.job(unique)
    read = []
    with dispatcher_held(pool):
        job.submit(step, 0, task_id="q0")
        # e.g. ``await job``, whose wait runs in an executor's thread
        other = threading.Thread(target=lambda: read.append(job.task_counts().total))
        other.start()
        other.join(2.0)
        assert read == []       # it waits for the queued add rather than read the ledger without it
    other.join(HOLD)
    assert read == [1]
    assert job.wait(quiet=True, timeout=120).ok
