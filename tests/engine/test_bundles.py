"""Tiny tasks in bundles, and chains that run on in the bundle (issue 17, points 2 to 4).

Real local pools. The pool first runs a few no-op tasks and ``true`` commands so
that it knows tasks of both kinds are tiny (bundles and chains start only then,
at the pace of a job's own tasks or, in a job with none yet, of the pool's of
that kind); its bundle target is
long (5 s) so that a test's gate task (held until the whole chain is added,
as tasks are dispatched as soon as they are added) does not make it think
otherwise. A spy on the dispatcher's ``bundle_call`` counts the Dask tasks it
sends, to show that a chain did not cost a round trip per step.
"""

from __future__ import annotations

import os
import signal
import threading

import dask.config
import pytest

import batchnb as bnb
from pools import temporary_pool


def noop(x=None):
    return x


def step(x):
    return x + 1


def gate(path):
    """Wait (bounded) until ``path`` exists: holds a chain's first step until the chain is added."""
    import time
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return 0


@pytest.fixture
def opened(tmp_path):
    """(a gate's path, a function that opens it)."""
    path = tmp_path / "open"
    return str(path), path.touch


@pytest.fixture(scope="module")
def pool():
    with dask.config.set({"batchnb.bundle-target": "5s"}), temporary_pool("bundles", dedicated=2) as p:
        warm = p.job("warm")
        warm.map(noop, range(20))
        warm.add_tasks([{"id": f"true-{i}", "command": "true"} for i in range(4)])     # commands' pace too
        assert warm.wait(quiet=True, timeout=120).ok
        yield p


@pytest.fixture
def sends(pool, monkeypatch):
    """The Dask tasks the dispatcher sends: [(task ids sent, task ids carried)]."""
    disp, seen, lock = pool._dispatcher, [], threading.Lock()
    real = disp.bundle_call

    def spy(node, members, reqs, keys, slots, now):
        fn, args, riding = real(node, members, reqs, keys, slots, now)
        with lock:
            seen.append(([r.task_id for r in reqs], [r.task_id for r, _ in (args[1] if len(args) > 1 else ())]))
        return fn, args, riding
    monkeypatch.setattr(disp, "bundle_call", spy)
    return seen


def _one_attempt_each_in_order(tasks):
    prev_end = None
    for t in tasks:
        (a,) = t.attempts
        assert a["state"] == "succeeded" and a["exit_code"] == 0, (t.id, a)
        assert a["dispatched"] <= a["start"] <= a["end"], (t.id, a)
        if prev_end is not None:
            assert a["start"] >= prev_end, (t.id, a, prev_end)
        prev_end = a["end"]


def test_a_chain_of_200_tiny_tasks_runs_in_bundles_and_records_every_step(pool, sends, unique, opened):
    job = pool.job(unique)
    tasks = [job.submit(gate, opened[0], task_id="s0")]
    for i in range(1, 200):
        tasks.append(job.submit(step, tasks[-1], task_id=f"s{i}"))
    opened[1]()
    res = job.wait(quiet=True, timeout=300)
    assert res.ok and tasks[-1].result() == 199
    assert all(t.state == bnb.TaskState.SUCCEEDED for t in tasks)
    _one_attempt_each_in_order(tasks)
    carried = sum(len(c) for _, c in sends)
    # Most steps rode behind their predecessor: far fewer Dask tasks than steps.
    assert carried >= 150 and len(sends) <= 50, (len(sends), carried)


def test_a_failing_step_blocks_its_dependents_and_exit_conditions_apply(pool, sends, unique, opened):
    job = pool.job(unique)
    job.add_tasks([
        {"id": "a", "command": f"while [ ! -e {opened[0]} ]; do sleep 0.01; done"},
        {"id": "b", "command": "exit 3", "depends_on": ["a"]},
        {"id": "c", "command": "true", "depends_on": ["b"]},
        {"id": "d", "command": "true", "depends_on": ["c"]},
        # the same chain, but b's exit code 3 satisfies its dependents
        {"id": "a2", "command": "true", "depends_on": ["a"]},
        {"id": "b2", "command": "exit 3", "depends_on": ["a2"],
         "exit_conditions": {3: bnb.ExitOptions(dependency_action="satisfy")}},
        {"id": "c2", "command": "true", "depends_on": ["b2"]},
        # a success that blocks: exit conditions on code 0 stop the chain at the driver
        {"id": "z", "command": "true", "depends_on": ["a"], "exit_conditions": {0: bnb.ExitOptions(dependency_action="block")}},
        {"id": "z1", "command": "true", "depends_on": ["z"]},
    ])
    opened[1]()
    job.wait(quiet=True, timeout=120)
    states = {t.id: str(getattr(t.state, 'value', t.state)) for t in job.tasks()}
    assert states == {"a": "succeeded", "b": "failed", "c": "blocked", "d": "blocked",
                      "a2": "succeeded", "b2": "failed", "c2": "succeeded", "z": "succeeded", "z1": "blocked"}
    assert [a["exit_code"] for a in job.task("b").attempts] == [3]
    assert job.task("c").attempts == [] and job.task("d").attempts == []
    assert any(carried for _, carried in sends), sends      # b, b2 rode behind a, a2


def _chain_whose_b_fails_once(pool, unique, tmp_path, *more) -> "bnb.Job":
    """a -> b -> c, b failing its first attempt (exit 4); ``more`` tasks after them; run to the end."""
    job = pool.job(unique, max_task_retries=2)
    mark = tmp_path / "failed-once"
    job.add_tasks([
        {"id": "a", "command": "true"},
        {"id": "b", "command": f"test -e {mark} || {{ touch {mark}; exit 4; }}", "depends_on": ["a"]},
        {"id": "c", "command": "true", "depends_on": ["b"]},
        *more,
    ])
    assert job.wait(quiet=True, timeout=120).ok
    assert [(a["state"], a["exit_code"]) for a in job.task("b").attempts] == [("failed", 4), ("succeeded", 0)]
    return job


def test_a_retried_step_in_a_chain_retries(pool, sends, unique, tmp_path):
    job = _chain_whose_b_fails_once(pool, unique, tmp_path)
    assert [a["state"] for a in job.task("c").attempts] == ["succeeded"]
    assert any("b" in carried for _, carried in sends), sends


def test_a_retried_step_goes_once_when_it_is_queued_twice(pool, unique, tmp_path):
    # b rides with a and fails: a's success had queued it once, its retry queues it again. With
    # other ready tasks (e, f) the next bundle may hold several tasks: b must be in it once.
    job = _chain_whose_b_fails_once(pool, unique, tmp_path, {"id": "e", "command": "true", "depends_on": ["a"]},
                                    {"id": "f", "command": "true", "depends_on": ["a"]})
    assert job.task_counts().succeeded == 5


def test_tiny_tasks_end_in_no_tail_of_ever_smaller_bundles(pool, sends, unique, opened):
    # 64 tiny tasks wait while both slots are held. A free slot took half of what was ready,
    # the next half of the rest (32, 16, 8, 4, 2, 1, 1: seven round trips for 64 no-ops); a
    # bundle now holds at least an eighth of bundle-target's work when that much is ready.
    job = pool.job(unique)
    job.map(noop, range(8), task_prefix="warm")     # the job's own pace: the gates' would be the pool's
    assert job.wait(quiet=True, timeout=120).ok
    hold = pool.job(unique + "-hold")
    blockers = [hold.submit(gate, opened[0], task_id=f"b{i}") for i in range(2)]
    _running(blockers)
    job.map(noop, range(64))
    sends.clear()
    opened[1]()
    assert job.wait(quiet=True, timeout=120).ok and hold.wait(quiet=True, timeout=120).ok
    assert sum(len(sent) for sent, _ in sends) == 64
    assert len(sends) <= 2, [len(sent) for sent, _ in sends]


def test_tasks_ready_together_spread_over_the_slots_free_together(pool, sends, unique):
    # The pool's commands so far were `true`s: at their pace, these four would fit in one bundle
    # many times over (a new job has no pace of its own yet). Two slots are free: two tasks each.
    warm = pool.job(unique[:50] + "-warm")
    warm.add_tasks([{"id": f"w{i}", "command": "true"} for i in range(4)])
    assert warm.wait(quiet=True, timeout=120).ok
    sends.clear()
    job = pool.job(unique)
    job.add_tasks([{"id": f"t{i}", "command": "sleep 0.2"} for i in range(4)])
    assert job.wait(quiet=True, timeout=120).ok
    assert sorted(len(sent) for sent, _ in sends) == [2, 2]
    nodes = [job.task(f"t{i}").attempts[0]["node"] for i in range(4)]
    assert sorted(nodes.count(n) for n in set(nodes)) == [2, 2]


def kill_my_worker_once(x, mark):
    if not os.path.exists(mark):
        open(mark, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 1


def _running(tasks, timeout: float = 60.0) -> None:
    """Wait (bounded) until every one of ``tasks`` is running."""
    import time
    deadline = time.monotonic() + timeout
    while any(t.state != "running" for t in tasks):
        assert time.monotonic() < deadline, [(t.task_id, t.state) for t in tasks]
        time.sleep(0.02)


def test_a_bundle_whose_worker_dies_is_requeued_task_by_task(pool, sends, unique, tmp_path, opened):
    # Both slots are held until the whole chain is in, so that its first step is dispatched, and
    # its bundle decides what it carries, only then (a gate in the chain itself was dispatched as
    # soon as it was added, carrying only the steps added by then).
    hold = pool.job(unique + "-hold")
    blockers = [hold.submit(gate, opened[0], task_id=f"b{i}") for i in range(2)]
    _running(blockers)
    job = pool.job(unique)
    mark = str(tmp_path / "killed")
    tasks = [job.submit(step, -1, task_id="k0")]
    for i in range(1, 30):
        fn, args = (kill_my_worker_once, (tasks[-1], mark)) if i == 10 else (step, (tasks[-1],))
        tasks.append(job.submit(fn, *args, task_id=f"k{i}"))
    opened[1]()
    assert hold.wait(quiet=True, timeout=120).ok
    assert job.wait(quiet=True, timeout=300).ok and tasks[-1].result() == 29
    # The member of the bundle that carried k10 was shown running: it is requeued, not failed nor retried. The
    # steps carried behind it were still pending in the ledger (never shown running or ended):
    # they run again with one attempt each, k10 included.
    states = {t.task_id: [a["state"] for a in t.attempts] for t in tasks}
    (member,), _ = next(sent for sent in sends if "k10" in sent[1])
    assert states[member] == ["requeued", "succeeded"], (states, sends)
    assert all(v == ["succeeded"] for k, v in states.items() if k != member), (states, sends)
    assert len([c for _, c in sends if "k10" in c]) >= 2, sends    # carried, lost, carried again
    assert any(carried for _, carried in sends), sends


def test_commands_in_bundles_record_exit_codes_tails_and_timeouts(pool, sends, unique, opened):
    job = pool.job(unique)
    specs = [{"id": "gate", "command": f"while [ ! -e {opened[0]} ]; do sleep 0.01; done"}]
    for i in range(40):
        specs.append({"id": f"c{i}", "command": f"echo line{i}; echo err{i} >&2; exit {i % 3}", "depends_on": ["gate"]})
    specs.append({"id": "slow", "command": "sleep 30", "max_wall_clock": 1, "depends_on": ["gate"]})
    job.add_tasks(specs)
    opened[1]()
    job.wait(quiet=True, timeout=120)
    for i in range(40):
        t = job.task(f"c{i}")
        (a,) = t.attempts
        assert a["exit_code"] == i % 3 and a["state"] == ("succeeded" if i % 3 == 0 else "failed"), (t, a)
        assert a["stdout_tail"] == f"line{i}\n" and a["stderr_tail"] == f"err{i}\n", a
        assert t.stdout() == f"line{i}\n"
    (a,) = job.task("slow").attempts
    assert a["state"] == "failed" and a["category"] == "timeout" and a["end"] - a["start"] < 20, a
    assert max(len(sent) + len(carried) for sent, carried in sends) > 1, sends   # several to a Dask task
    # A fan-out is not carried whole behind the gate: its branches go back to the driver to spread.
    assert all(len(carried) <= 1 for sent, carried in sends if sent == ["gate"]), sends


def spin_until(x, started, stop_after):
    """Mark that it started, then loop (in Python, so a kill stops it) for at most ``stop_after`` s."""
    import time
    open(started, "w").close()
    deadline = time.monotonic() + stop_after
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return x + 1


def write_mark(x, path):
    open(path, "w").close()
    return x + 1


def test_terminating_a_job_stops_a_carried_step_and_runs_none_after_it(pool, sends, unique, opened, tmp_path):
    from waiting import wait_for
    job = pool.job(unique)
    started, after = str(tmp_path / "started"), str(tmp_path / "after")
    t = job.submit(gate, opened[0], task_id="g")
    # A submit does not wait for the dispatcher (engine/posted.py): a read syncs with it, so that g
    # goes alone, and the chain behind it is all added before g can end and carry it.
    job.task_counts()
    t = job.submit(step, t, task_id="s1")
    spin = job.submit(spin_until, t, started, 60, task_id="spin")
    job.submit(write_mark, spin, after, task_id="after")
    job.task_counts()
    opened[1]()
    wait_for(lambda: os.path.exists(started), timeout=60, what="the carried step to start")
    assert spin.state == bnb.TaskState.PENDING         # it rides behind s1: not shown running yet
    job.terminate()
    states = {i.id: str(getattr(i.state, "value", i.state)) for i in job.tasks()}
    assert states["spin"] == "cancelled" and states["after"] == "cancelled", states
    # The kill reached the carried step: its slot is given back long before its 60 s loop ends,
    # and the step behind it never ran.
    wait_for(lambda: not any(n.running for n in pool.nodes()), timeout=30, what="the bundle to end")
    assert not os.path.exists(after)
    assert spin.attempts == [] and job.task("after").attempts == []
    assert any("spin" in carried for _, carried in sends), sends
