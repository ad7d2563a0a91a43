"""A node's next bundle of tiny tasks waits on the node, not in the driver (engine/queued.py).

A real local pool of one node and one slot, its tasks proven tiny by a warm-up
map. A gate task holds the slot; while it does, a bundle of the tasks waiting
behind it is sent to the node ahead, and its tasks stay ``active``, without an
attempt, until the gate ends and they start. Lost or terminated before they
start, they run again from the driver's queue or not at all, never twice. And
bundles are sized at the pace of the job's own tasks, once it has one.
"""

from __future__ import annotations

import os
import signal

import pytest

import batchnb as bnb
from batchnb.node import attempt as node_attempt
from pools import temporary_pool
from waiting import wait_for

MAP = 2_000     # enough waiting tasks for a bundle of at least an eighth of bundle-target


def noop(x=None):
    return x


def gate(path, mark=None):
    """Wait (bounded) until ``path`` exists; then, the first time only (``mark``), kill its own worker."""
    import time
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    if mark is not None and not os.path.exists(mark):
        open(mark, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return 0


def touch(i, folder):
    open(os.path.join(folder, str(i)), "w").close()
    return i


@pytest.fixture(scope="module")
def pool():
    with temporary_pool("queued", dedicated=1) as p:
        warm = p.job("warm")
        warm.map(noop, range(50))
        assert warm.wait(quiet=True, timeout=120).ok
        yield p


def _queued(pool) -> list:
    """The (job id, task id) of the tasks waiting in a bundle queued on the pool's node, once there is one."""
    disp = pool._dispatcher

    def look():
        node = next(iter(disp.nodes.nodes.values()))
        keys = disp.queued_keys.get(node.queued, ()) if node.queued else ()
        return [(disp.jobs[j].spec.id, disp.jobs[j].tasks[t].spec.id) for j, t, _ in keys]
    found = []

    def some():
        found[:] = disp.call(look)
        return bool(found)
    wait_for(some, timeout=60, what="a bundle to be queued behind the busy slot")
    return found


def _held_by_a_gate(pool, unique, tmp_path, mark=None):
    hold = pool.job(unique + "-hold")
    opening = str(tmp_path / "open")
    g = hold.submit(gate, opening, mark, task_id="gate")
    wait_for(lambda: g.state == "running", timeout=60, what="the gate to run")
    return hold, g, lambda: open(opening, "w").close()


def test_tasks_wait_on_a_busy_node_active_until_its_slot_frees(pool, unique, tmp_path):
    hold, g, open_gate = _held_by_a_gate(pool, unique, tmp_path)
    job = pool.job(unique)
    job.map(noop, range(MAP))
    waiting = _queued(pool)
    assert waiting and {j for j, _ in waiting} == {unique}, waiting
    first = job.task(waiting[0][1])
    # Sent, but not running: the gate holds the only slot.
    assert job.task_counts().running == 0 and first.state == "active" and first.attempts == []
    open_gate()
    assert hold.wait(quiet=True, timeout=120).ok and job.wait(quiet=True, timeout=300).ok
    assert job.stats().attempts == MAP                  # each task once
    (a,) = first.attempts
    gate_end = g.attempts[-1]["end"]
    # It took the slot once the gate's attempt had ended, not when it was sent (the node may have
    # started it a moment before the driver heard the gate end); the node ran it after the gate.
    assert a["node"] == g.attempts[-1]["node"] and gate_end <= a["start"] <= a["end"], (a, gate_end)
    assert a["dispatched"] >= gate_end, (a, gate_end)


def test_tasks_waiting_on_a_lost_node_run_once_from_the_queue(pool, unique, tmp_path):
    # The gate kills its worker: the bundle waiting behind it is lost with it. Its tasks never
    # started: they go back to the queue, neither requeued nor retried, and run once.
    hold, g, open_gate = _held_by_a_gate(pool, unique, tmp_path, mark=str(tmp_path / "killed"))
    job = pool.job(unique)
    job.map(noop, range(MAP))
    waiting = _queued(pool)
    open_gate()
    assert hold.wait(quiet=True, timeout=180).ok and job.wait(quiet=True, timeout=300).ok
    assert [a["state"] for a in g.attempts] == ["requeued", "succeeded"]
    assert job.stats().attempts == MAP
    for _, task_id in waiting[:20]:
        assert [a["state"] for a in job.task(task_id).attempts] == ["succeeded"], task_id


def _marked_terminated(pool) -> int:
    """How many attempts the node was told to kill before they started."""
    def count():
        return len(node_attempt._terminated)
    return sum(pool.client.run(count).values())


def test_terminating_a_job_whose_tasks_wait_on_a_node_runs_none(pool, unique, tmp_path):
    hold, g, open_gate = _held_by_a_gate(pool, unique, tmp_path)
    job = pool.job(unique)
    folder = tmp_path / "ran"
    folder.mkdir()
    job.map(touch, range(MAP), folder=str(folder))
    waiting = _queued(pool)
    job.terminate()
    counts = job.task_counts()
    assert counts.cancelled == MAP and counts.running == 0, counts
    # The kill reached the node before the slot freed: the waiting attempts are marked there.
    wait_for(lambda: _marked_terminated(pool) >= len(waiting), timeout=60, what="the kill to reach the node")
    open_gate()
    assert hold.wait(quiet=True, timeout=120).ok
    wait_for(lambda: not any(n.running for n in pool.nodes()), timeout=60, what="the queued bundle to end")
    assert os.listdir(folder) == []                    # shown cancelled, and none of them ran
    assert all(job.task(t).attempts == [] for _, t in waiting[:20])
    assert job.stats().attempts == 0


def test_a_job_whose_tasks_prove_long_is_not_bundled_at_the_pools_pace(pool, unique, monkeypatch):
    # The pool's no-op map says its tasks take a millisecond; this job's first task took 0.3 s,
    # longer than a quarter of bundle-target (0.2 s): its next tasks go one to a Dask task.
    disp, sent = pool._dispatcher, []
    real = disp.bundle_call

    def spy(node, members, reqs, keys, slots, now):
        sent.append(len(reqs))
        return real(node, members, reqs, keys, slots, now)
    monkeypatch.setattr(disp, "bundle_call", spy)
    job = pool.job(unique)
    job.add_task("first", "sleep 0.3")
    assert job.wait(quiet=True, timeout=60).ok
    job.add_tasks([{"id": f"c{i}", "command": "sleep 0.3"} for i in range(3)])
    assert job.wait(quiet=True, timeout=60).ok
    assert sent == [1, 1, 1, 1], sent
