"""The engine on real local pools: retries, dependencies, exit conditions,
priorities, slots, termination. Each test uses its own job on a shared pool
unless it needs a pool of a particular shape."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import batchnb as bnb
from batchnb.engine.events import TaskStateChanged
from processes import alive


def events_of(pool, job_id):
    seen, lock = [], threading.Lock()

    def grab(evs):
        with lock:
            seen.extend(e for e in evs if isinstance(e, TaskStateChanged))
    return seen, pool.bus.subscribe(grab, job_id=job_id)


def test_flaky_task_succeeds_on_its_third_attempt(pool2, unique, tmp_path):
    job = pool2.job(unique)
    counter = tmp_path / "count"
    t = job.add_task("flaky", f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; '
                              '[ "$n" -ge 2 ]', retry=bnb.Retry(max=3, delay="0.1s"))
    result = job.wait(timeout=60, quiet=True)
    assert t.state == bnb.TaskState.SUCCEEDED
    assert [a["state"] for a in t.attempts] == ["failed", "failed", "succeeded"]
    assert [a["n"] for a in t.attempts] == [1, 2, 3]
    assert result.counts == {"succeeded": 1} and result.reason == "all_tasks_complete"


def test_retries_exhausted_fail_the_task(pool2, unique):
    job = pool2.job(unique, max_task_retries=1)
    t = job.add_task("bad", "exit 4", retry=None)
    job.wait(timeout=60, quiet=True)
    assert t.state == bnb.TaskState.FAILED and t.exit_code == 4
    assert len(t.attempts) == 2  # job's max_task_retries=1 applies with retry=None's default delay 0


def test_failure_three_levels_up_blocks_the_chain_within_a_second(pool2, unique):
    job = pool2.job(unique)
    seen, sub = events_of(pool2, unique)
    job.add_task("a", "sleep 0.3; exit 1")
    for parent, child in (("a", "b"), ("b", "c"), ("c", "d")):
        job.add_task(child, "echo never", depends_on=[parent])
    job.add_task("other", "true")
    result = job.wait(timeout=60, quiet=True)
    sub.close()
    assert result.counts == {"failed": 1, "blocked": 3, "succeeded": 1}
    failed_at = next(e.time for e in seen if e.task_id == "a" and e.state == "failed")
    blocked = {e.task_id: e for e in seen if e.state == "blocked"}
    assert set(blocked) == {"b", "c", "d"}
    assert all(e.time - failed_at < 1.0 for e in blocked.values())
    assert "dependency a failed" in blocked["d"].reason or "dependency" in blocked["d"].reason
    assert job.task("d").failure["category"] == "blocked"


def test_exit_conditions_per_code_range_and_default(pool2, unique):
    job = pool2.job(unique)
    job.add_task("three", "exit 3", exit_conditions={3: bnb.ExitOptions(dependency_action="satisfy")})
    ran = job.add_task("after-three", "echo ran", depends_on=["three"])
    job.add_task("five", "exit 5", exit_conditions={"default": bnb.ExitOptions(dependency_action="satisfy")})
    ran2 = job.add_task("after-five", "echo ran", depends_on=["five"])
    job.add_task("zero", "exit 0", exit_conditions={0: bnb.ExitOptions(dependency_action="block")})
    blocked = job.add_task("after-zero", "echo never", depends_on=["zero"])
    job.wait(timeout=60, quiet=True)
    assert job.task("three").state == bnb.TaskState.FAILED
    assert ran.state == ran2.state == bnb.TaskState.SUCCEEDED
    assert blocked.state == bnb.TaskState.BLOCKED


def test_exit_code_range_can_terminate_the_job(pool2, unique):
    job = pool2.job(unique)
    job.add_task("boom", "exit 12", exit_conditions={range(10, 20): bnb.ExitOptions(job_action="terminate")})
    job.add_task("slow", "sleep 30")
    result = job.wait(timeout=60, quiet=True)
    assert result.reason == "task_failed"
    assert job.state == bnb.JobState.COMPLETED
    assert job.task("slow").state == bnb.TaskState.CANCELLED


def test_python_tasks_pass_results_to_dependents(pool2, unique):
    job = pool2.job(unique)
    squares = job.map(lambda x: x * x, range(10))
    total = job.submit(sum, squares, task_id="total")
    labelled = job.submit(lambda t, label: f"{label}={t}", total, label="sum")
    job.wait(timeout=60, quiet=True)
    assert total.result() == 285
    assert labelled.result() == "sum=285"
    assert job.task("total").info().command.endswith("sum(...)")


def test_a_failed_python_task_raises_taskfailed_with_its_message(pool2, unique):
    job = pool2.job(unique)
    t = job.submit(lambda: 1 / 0, task_id="div")
    job.wait(timeout=60, quiet=True)
    with pytest.raises(bnb.TaskFailed, match="ZeroDivisionError"):
        t.result()
    assert "ZeroDivisionError" in t.stderr()


def test_many_tiny_tasks_each_keep_their_own_record(pool2, unique):
    job = pool2.job(unique)
    tasks = job.map(abs, range(-300, 0))
    result = job.wait(timeout=120, quiet=True)
    assert result.counts == {"succeeded": 300}
    assert tasks[7].result() == 293
    assert all(len(job.task(t.task_id).attempts) == 1 for t in tasks[::37])


def test_terminate_kills_running_processes_and_cancels_the_rest(pool2, unique, tmp_path):
    job = pool2.job(unique)
    pidfile = tmp_path / "pid"
    running = job.add_task("long", f"echo $$ > {pidfile}; sleep 60 & echo $! >> {pidfile}; wait")
    job.add_task("waiting", "true", depends_on=["long"])
    deadline = time.monotonic() + 30
    while (not pidfile.exists() or len(pidfile.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p) for p in pidfile.read_text().split()]
    job.terminate()
    result = job.wait(timeout=30, quiet=True)
    assert result.reason == "terminated"
    assert running.state == bnb.TaskState.CANCELLED
    assert job.task("waiting").state == bnb.TaskState.CANCELLED
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    with pytest.raises(bnb.SpecError, match="accepts no more tasks"):
        job.add_task("late", "true")


def test_job_wall_clock_ends_the_job(pool2, unique):
    job = pool2.job(unique, max_wall_clock="1s")
    job.add_task("slow", "sleep 30")
    result = job.wait(timeout=30, quiet=True)
    assert result.reason == "max_wall_clock"


def test_on_all_tasks_complete_terminate_completes_the_job(pool2, unique):
    job = pool2.job(unique, on_all_tasks_complete="terminate")
    job.add_task("one", "true")
    result = job.wait(timeout=30, quiet=True)
    assert result.reason == "all_tasks_complete" and job.state == bnb.JobState.COMPLETED


def test_noaction_job_accepts_more_tasks_after_wait(pool2, unique):
    job = pool2.job(unique)
    job.add_task("one", "true")
    job.wait(timeout=30, quiet=True)
    job.add_task("two", "true")
    assert job.wait(timeout=30, quiet=True).counts == {"succeeded": 2}
    assert job.state == bnb.JobState.ACTIVE


def test_await_job_in_async_code(pool2, unique):
    job = pool2.job(unique)
    job.add_task("one", "sleep 0.2")

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        ticker = asyncio.ensure_future(tick())
        result = await job
        ticker.cancel()
        return result, ticks
    result, ticks = asyncio.run(main())
    assert result.counts == {"succeeded": 1}
    assert ticks > 5  # the loop kept running while the job did


def test_bad_input_is_refused_at_add_and_loses_nothing(pool2, unique):
    job = pool2.job(unique)
    job.add_task("a", "true")
    with pytest.raises(bnb.SpecError, match="not in the job") as err:
        job.add_task("b", "true", depends_on=["a", "nope", "missing"])
    assert "nope" in str(err.value) and "missing" in str(err.value)
    with pytest.raises(bnb.SpecError, match="cycle"):
        job.add_tasks([bnb.TaskSpec("x", "true", depends_on=["y"]), bnb.TaskSpec("y", "true", depends_on=["x"])])
    with pytest.raises(bnb.SpecError, match="required_slots"):
        job.add_task("big", "true", required_slots=2)
    with pytest.raises(bnb.SpecError, match="different spec .*env"):
        job.add_tasks([bnb.TaskSpec("A", "true", env={"X": "1"})])  # ids are unique ignoring case
    with pytest.raises(bnb.SpecError, match="exists in job .* with a different spec"):
        job.add_task("a", "false")
    assert job.add_task("a", "true").task_id == "a"  # equal spec: a no-op
    job.wait(timeout=30, quiet=True)
    assert [t.id for t in job.tasks()] == ["a"]


def test_forward_references_resolve_within_one_bulk_add(pool2, unique):
    job = pool2.job(unique)
    job.add_tasks([{"id": "merge", "command": "true", "depends_on": ["p1", "p2"]},
                   {"id": "p1", "command": "true"}, {"id": "p2", "command": "true"}])
    job.add_task("after", "true", depends_on=["merge"])
    assert job.wait(timeout=30, quiet=True).counts == {"succeeded": 4}


def test_task_id_ranges(pool2, unique):
    job = pool2.job(unique)
    job.add_tasks([bnb.TaskSpec(str(i), "true") for i in range(1, 6)])
    merge = job.add_task("merge", "true", depends_on=bnb.TaskIdRange(1, 5))
    job.wait(timeout=30, quiet=True)
    assert merge.state == bnb.TaskState.SUCCEEDED
    assert job.ledger.task(job.id, "merge") is not None


def test_every_state_is_in_the_ledger_before_it_is_shown(pool2, unique):
    job = pool2.job(unique)
    order = ["pending", "active", "running", "succeeded", "failed", "blocked", "cancelled"]
    problems = []

    def check(evs):
        for e in evs:
            if isinstance(e, TaskStateChanged):
                row = job.ledger.task(e.job_id, e.task_id)
                if row is None or order.index(row["state"]) < order.index(e.state) and row["state"] != "active":
                    problems.append((e.task_id, e.state, row and row["state"]))
    sub = pool2.bus.subscribe(check, job_id=unique)
    job.add_tasks([bnb.TaskSpec(f"t{i}", "true") for i in range(20)])
    job.wait(timeout=60, quiet=True)
    sub.close()
    assert problems == []
    assert any(j["id"] == unique for j in bnb.jobs(job.ledger))


@pytest.fixture(scope="module")
def one_node_two_slots(tmp_path_factory):
    from batchnb.engine.ledger import Ledger
    pool = bnb.Pool("slots", dedicated=1, task_slots_per_node=2,
                    ledger=Ledger(tmp_path_factory.mktemp("l") / "l.sqlite"))
    yield pool
    pool.close()


def _intervals(job, ids):
    out = []
    for tid in ids:
        a = job.task(tid).attempts[-1]
        out.append((a["start"], a["end"]))
    return out


def _max_overlap(intervals):
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    cur = best = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def test_task_slots_per_node_bound_concurrency(one_node_two_slots, unique):
    job = one_node_two_slots.job(unique)
    job.add_tasks([bnb.TaskSpec(f"s{i}", "sleep 0.4") for i in range(6)])
    job.add_tasks([bnb.TaskSpec(f"w{i}", "sleep 0.3", required_slots=2) for i in range(2)])
    job.wait(timeout=60, quiet=True)
    assert _max_overlap(_intervals(job, [f"s{i}" for i in range(6)])) == 2
    wide = _intervals(job, ["w0", "w1"])
    singles = _intervals(job, [f"s{i}" for i in range(6)])
    for ws, we in wide:  # a two-slot task runs alone on the node
        assert not any(s < we - 0.01 and e > ws + 0.01 for s, e in singles)


def test_priorities_order_the_ready_queue(one_node_two_slots, unique):
    job = one_node_two_slots.job(unique)
    job.add_task("blocker", "sleep 1", required_slots=2)
    job.add_tasks([bnb.TaskSpec("low", "true", priority=-10), bnb.TaskSpec("mid", "true"),
                   bnb.TaskSpec("high", "true", priority=100)])
    job.wait(timeout=60, quiet=True)
    starts = {t: job.task(t).attempts[0]["dispatched"] for t in ("low", "mid", "high")}
    assert starts["high"] <= starts["mid"] <= starts["low"]


def test_retry_backoff_holds_no_slot(one_node_two_slots, unique, tmp_path):
    job = one_node_two_slots.job(unique)
    job.add_task("hog", "sleep 2.5")  # one slot busy all along
    flaky = job.add_task("flaky", f"test -f {tmp_path}/ok || {{ touch {tmp_path}/ok; exit 1; }}",
                         retry=bnb.Retry(max=1, delay="1.5s", jitter=0))
    time.sleep(0.5)
    other = job.add_task("other", "true")
    job.wait(timeout=60, quiet=True)
    first, second = flaky.attempts
    assert second["dispatched"] - first["end"] >= 1.4
    assert other.attempts[0]["dispatched"] < second["dispatched"]  # ran while flaky waited


@pytest.mark.parametrize("fill", ["spread", "pack"])
def test_node_fill(fill, tmp_path):
    from batchnb.engine.ledger import Ledger
    with bnb.Pool(f"fill-{fill}", dedicated=2, task_slots_per_node=2, node_fill=fill,
                  ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        job = pool.job("fill")
        job.add_tasks([bnb.TaskSpec(f"t{i}", "sleep 0.5") for i in range(2)])
        job.wait(timeout=60, quiet=True)
        nodes = {job.task(f"t{i}").attempts[0]["node"] for i in range(2)}
        assert len(nodes) == (2 if fill == "spread" else 1)


def test_address_backend_uses_a_running_scheduler(tmp_path):
    from distributed import LocalCluster
    from batchnb.engine.ledger import Ledger
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0",
                      processes=True) as cluster:
        with bnb.Pool("elsewhere", backend="address", address=cluster.scheduler_address,
                      ledger=Ledger(tmp_path / "l.sqlite")) as pool:
            job = pool.job("remote")
            t = job.add_task("hi", "echo $AZ_BATCH_NODE_ID")
            job.wait(timeout=60, quiet=True)
            assert t.state == bnb.TaskState.SUCCEEDED
            assert [n.group for n in pool.nodes()] == ["dedicated"]
    with pytest.raises(bnb.SpecError, match="address"):
        bnb.Pool("x", backend="address", address="not-an-address")


def test_pool_nodes_show_running_tasks(pool2, unique):
    job = pool2.job(unique)
    job.add_task("sleeper", "sleep 2")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy = [n for n in pool2.nodes() if "sleeper" in n.running]
        if busy:
            break
        time.sleep(0.05)
    assert busy and busy[0].running == ("sleeper",) and busy[0].state == "running"
    job.terminate()


def test_pool_validation_names_the_field():
    with pytest.raises(bnb.SpecError, match="task_slots_per_node"):
        bnb.Pool("p", task_slots_per_node=0)
    with pytest.raises(bnb.SpecError, match="node_fill"):
        bnb.Pool("p", node_fill="diagonal")
    with pytest.raises(bnb.SpecError, match="backend"):
        bnb.Pool("p", backend="nowhere")
    with pytest.raises(bnb.SpecError, match="dedicated"):
        bnb.Pool("p", dedicated=-1)


# -- found in review: each of these hung, lost work or answered wrongly before its fix --

def test_a_task_that_kills_its_worker_is_requeued_then_fails(pool2, unique):
    import dask

    def die():
        import os as o
        import signal
        o.kill(o.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    with dask.config.set({"batchnb.max-node-losses": 1}):
        job = pool2.job(unique)
        t = job.submit(die, task_id="die")
        result = job.wait(timeout=120, quiet=True)
    assert t.state == bnb.TaskState.FAILED
    assert t.failure["category"] == "crash" and "lost under it 2 times" in t.failure["message"]
    assert [a["state"] for a in t.attempts][:1] == ["requeued"] and t.requeue_count == 1
    assert result.counts == {"failed": 1}
    deadline = time.monotonic() + 30   # the nanny brought the workers back
    while len([n for n in pool2.nodes() if n.state in ("idle", "running")]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len([n for n in pool2.nodes() if n.state in ("idle", "running")]) == 2


def test_a_secret_gone_at_dispatch_fails_the_task_and_the_engine_goes_on(pool2, unique, monkeypatch):
    monkeypatch.setenv("BATCHNB_TEST_TOKEN", "s3cret")
    job = pool2.job(unique)
    job.add_task("first", "sleep 0.5")
    t = job.add_task("needs", "echo $TOKEN", secrets={"TOKEN": "env:BATCHNB_TEST_TOKEN"}, depends_on=["first"],
                     retry=bnb.Retry(max=-1, backoff=1.0))
    monkeypatch.delenv("BATCHNB_TEST_TOKEN")
    job.wait(timeout=30, quiet=True)
    assert t.state == bnb.TaskState.FAILED and "BATCHNB_TEST_TOKEN" in t.failure["message"]
    assert "s3cret" not in str(job.ledger.attempts(job.id))
    assert pool2.nodes()  # the dispatcher still answers


def test_replacing_a_finished_dependency_makes_dependents_wait_for_the_new_one(pool2, unique, tmp_path):
    job = pool2.job(unique)
    job.add_task("a", "true")
    gate = tmp_path / "gate"
    job.add_task("b", f"while [ ! -f {gate} ]; do sleep 0.05; done")
    d = job.add_task("d", "true", depends_on=["a", "b"])
    job.task("a").wait(timeout=30)
    job.add_task("a", "sleep 0.3; true", replace=True)
    gate.touch()
    job.wait(timeout=30, quiet=True)
    a_end = job.task("a").attempts[-1]["end"]
    assert d.state == bnb.TaskState.SUCCEEDED
    assert d.attempts[0]["dispatched"] >= a_end  # it waited for the new a, not the old one
    assert job.task("a").attempts[-1]["n"] == 2  # attempt numbers go on across a replace


def test_handles_of_another_job_are_refused(pool2, unique):
    one, two = pool2.job(unique + "-1"), pool2.job(unique + "-2")
    h = one.submit(abs, -1, task_id="x")
    with pytest.raises(bnb.SpecError, match="is a task of job"):
        two.submit(abs, h, task_id="y")
    one.wait(timeout=30, quiet=True)


def test_python_tasks_get_their_environment(pool2, unique):
    def read():
        import os as o
        return o.environ.get("QUALITY"), o.environ.get("AZ_BATCH_TASK_ID")
    job = pool2.job(unique)
    t = job.submit(read, env={"QUALITY": "90"}, task_id="read")
    job.wait(timeout=60, quiet=True)
    assert t.result() == ("90", "read")


def test_bulk_add_returns_handles_in_the_order_given(pool2, unique):
    job = pool2.job(unique)
    job.add_task("x2", "true")
    tasks = job.add_tasks([bnb.TaskSpec("x1", "true"), bnb.TaskSpec("x2", "true"), bnb.TaskSpec("x3", "true")])
    assert [t.task_id for t in tasks] == ["x1", "x2", "x3"]
    job.wait(timeout=30, quiet=True)


def test_multi_instance_is_refused_not_ignored(pool2, unique):
    job = pool2.job(unique)
    with pytest.raises(bnb.SpecError, match="multi_instance"):
        job.add_task("mpi", "mpiexec hostname", multi_instance=bnb.MultiInstance(3, "echo coord"))


def test_waiting_on_a_job_with_no_tasks_returns(pool2, unique):
    assert pool2.job(unique).wait(timeout=5, quiet=True).counts == {}


def test_no_task_process_outlives_preemption_or_close(tmp_path):
    from batchnb.engine.ledger import Ledger
    pids = tmp_path / "pids"
    with bnb.Pool("orphans", dedicated=1, spot=1, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        job = pool.job("orphans")
        job.add_tasks([bnb.TaskSpec(f"s{i}", f"echo $$ >> {pids}; exec sleep 300") for i in range(2)])
        deadline = time.monotonic() + 30
        while (not pids.exists() or len(pids.read_text().split()) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        spot_pid = None
        for t in ("s0", "s1"):
            if job.task(t).attempts[-1]["node"] == "spot-0":
                spot_pid = True
        pool.preempt("spot-0")
    started = [int(p) for p in pids.read_text().split()]
    assert spot_pid and len(started) >= 2
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in started if alive(p)] == []


def test_adding_the_same_tasks_to_a_completed_job_is_a_no_op(pool2, unique):
    job = pool2.job(unique, on_all_tasks_complete="terminate")
    job.add_tasks([bnb.TaskSpec("a", "true"), bnb.TaskSpec("b", "true")])
    job.wait(timeout=30, quiet=True)
    again = job.add_tasks([bnb.TaskSpec("a", "true"), bnb.TaskSpec("b", "true")])  # a re-run notebook
    assert [t.task_id for t in again] == ["a", "b"] and len(job.task("a").attempts) == 1
    with pytest.raises(bnb.SpecError, match="accepts no more tasks"):
        job.add_tasks([bnb.TaskSpec("a", "true"), bnb.TaskSpec("c", "true")])


def test_replace_keeps_the_attempt_history(pool2, unique):
    job = pool2.job(unique)
    job.add_task("a", "exit 1")
    job.wait(timeout=30, quiet=True)
    job.add_task("a", "true", replace=True)
    job.wait(timeout=30, quiet=True)
    assert [(a["n"], a["state"]) for a in job.task("a").attempts] == [(1, "failed"), (2, "succeeded")]


def test_a_job_ended_by_another_process_is_dropped_not_taken_back(pool2, unique):
    import dask
    from batchnb.engine.offline import _terminate_in_ledger
    with dask.config.set({"batchnb.lease-ttl": "1.5s"}):
        job = pool2.job(unique)
        job.add_task("slow", "sleep 30")
        deadline = time.monotonic() + 20
        while job.task("slow").state != bnb.TaskState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        pool2.ledger.release_lease(unique, pool2._owner)        # as `batchnb terminate` does ...
        _terminate_in_ledger(pool2.ledger, unique, "terminated")  # ... for a driver it thinks dead
        deadline = time.monotonic() + 10
        while pool2._dispatcher.call(lambda: unique.lower() in pool2._dispatcher.jobs) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    assert unique.lower() not in pool2._dispatcher.call(lambda: set(pool2._dispatcher.jobs))
    assert pool2.ledger.job(unique)["state"] == "completed"
    assert pool2.ledger.lease(unique) is None
    assert job.task("slow").state == bnb.TaskState.CANCELLED


def test_a_node_removed_by_resize_takes_its_task_processes_along(tmp_path):
    from batchnb.engine.ledger import Ledger
    marks = tmp_path / "marks"
    marks.mkdir()
    with bnb.Pool("shrink", dedicated=2, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        job = pool.job("shrink")
        job.add_tasks([bnb.TaskSpec(f"t{i}", f"sleep 3; touch {marks}/$AZ_BATCH_TASK_ID-$AZ_BATCH_TASK_ATTEMPT")
                       for i in range(2)])
        deadline = time.monotonic() + 20
        while len([n for n in pool.nodes() if n.running]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pool.resize(dedicated=1)
        result = job.wait(timeout=60, quiet=True)
        assert [n.id for n in pool.nodes()] == ["dedicated-1"] or len(pool.nodes()) == 1
        requeued = [t for t in job.tasks() if t.requeues]
    assert result.counts == {"succeeded": 2}
    assert len(requeued) == 1 and requeued[0].failure is None
    # each task finished exactly once: the removed node's copy was killed, not left to finish
    assert sorted(p.name.rsplit("-", 1)[0] for p in marks.iterdir()) == ["t0", "t1"]
    with pytest.raises(bnb.SpecError, match="autoscales"):
        with bnb.Pool("auto", autoscale="$TargetDedicatedNodes = 0;", ledger=Ledger(tmp_path / "m.sqlite")) as p:
            p.resize(dedicated=2)


def test_a_released_nodes_worker_still_listed_is_not_taken_back(tmp_path):
    # A node let go while its worker was starting has that worker join the scheduler after
    # the release, until the cluster closes it (seen here: listed ~0.1 s after a resize 2 -> 1
    # made while it started); a closing worker is listed too. A node poll in that moment
    # must not take either in as an idle node that tasks are placed on. The scheduler's
    # listing from before the release is replayed to the dispatcher's poll, the one place
    # it reads the listing, with a stranger's worker on its way out added to it.
    from dataclasses import replace
    from batchnb.backends.testing import wait_for
    from batchnb.engine.ledger import Ledger
    with bnb.Pool("late", dedicated=2, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        disp, engine = pool._dispatcher, pool._engine
        wait_for(lambda: [n.state for n in pool.nodes()] == ["idle", "idle"], 60, "two idle nodes")
        listing = engine.workers()
        pool.resize(dedicated=1)
        kept = next(iter(pool._backend.requested()))
        wait_for(lambda: [n.id for n in pool.nodes()] == [kept], 30, "the released node gone")
        closing = replace(listing[0], name="stranger", address="tcp://127.0.0.1:1", status="closing_gracefully")
        engine.workers = lambda: [*listing, closing]
        try:
            disp.call(disp._poll_nodes, time.time())
            table = disp.call(lambda: {n.node_id: n.state.value for n in disp.nodes.nodes.values()})
        finally:
            del engine.workers
        assert table == {kept: "idle"}
        job = pool.job("after")
        job.add_tasks([bnb.TaskSpec(f"t{i}", "true") for i in range(4)])
        assert job.wait(timeout=60, quiet=True).ok
        assert {t.node for t in job.tasks()} == {kept} and not any(t.requeues for t in job.tasks())


def test_closing_a_pool_on_a_shared_scheduler_spares_other_drivers_tasks(tmp_path):
    from distributed import LocalCluster
    from batchnb.engine.ledger import Ledger
    with LocalCluster(n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address=":0",
                      resources={"slots": 2}) as cluster:
        other = bnb.Pool("other", backend="address", address=cluster.scheduler_address,
                         ledger=Ledger(tmp_path / "o.sqlite"))
        theirs = other.job("theirs")
        t = theirs.add_task("keeps-running", "sleep 2")
        with bnb.Pool("mine", backend="address", address=cluster.scheduler_address,
                      ledger=Ledger(tmp_path / "m.sqlite")) as mine:
            mine.job("mine").add_task("mine", "sleep 30")
            deadline = time.monotonic() + 20
            while t.state != bnb.TaskState.RUNNING and time.monotonic() < deadline:
                time.sleep(0.05)
        theirs.wait(timeout=30, quiet=True)
        assert t.state == bnb.TaskState.SUCCEEDED
        other.close()



def test_wait_raises_when_the_pool_cannot_record_its_work(unique, monkeypatch):
    # The ledger stops taking writes while the task runs (a full disk, say): fault injection at
    # the ledger's commit, the one way a turn's writes go in. The turn that sees the task end
    # fails and its writes are lost; job.wait() says so after the stall grace instead of waiting
    # for a completion the ledger will never show.
    import dask.config
    from batchnb.errors import LedgerError
    from pools import temporary_pool
    with dask.config.set({"batchnb.stall-grace": "1s"}), temporary_pool("unrecorded", dedicated=1) as pool:
        job = pool.job(unique)
        job.add_task("t", "sleep 2")
        assert job.task_counts().active + job.task_counts().running == 1

        def disk_full(batch):
            raise LedgerError("database or disk is full")
        monkeypatch.setattr(pool.ledger, "commit", disk_full)
        t0 = time.monotonic()
        with pytest.raises(bnb.PoolStalled, match="could not record its work in the ledger.*disk is full"):
            job.wait(timeout=60)
        assert time.monotonic() - t0 < 30
        # A detached pool's agent hands its clients the same, with their events poll and at hello:
        # no event can carry it (events are published after the commit that failed).
        from batchnb.agent.rpc import AgentHandlers

        async def ask_the_agent():
            handlers = AgentHandlers(pool, asyncio.get_running_loop())
            return (await handlers.events("c", since=handlers.log.seq, timeout=0.1))["stalled"], \
                (await handlers.hello("c"))["stalled"]
        for stalled in asyncio.run(ask_the_agent()):
            assert "could not record its work in the ledger" in stalled[1]
        monkeypatch.undo()          # the disk has room again: the pool closes as usual
