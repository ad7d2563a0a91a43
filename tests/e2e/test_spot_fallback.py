"""Spot fallback on a real local pool: a task preempted ``spot_fallback`` times runs on a
dedicated node next, even when its spot node is back and idle; requeues are not retries."""

from __future__ import annotations

import dask
import pytest

import batchnb as bnb

from pools import temporary_pool
from waiting import wait_for


def states(pool) -> dict:
    return {n.id: n.state for n in pool.nodes()}


def test_a_task_preempted_once_waits_for_the_dedicated_node_not_its_returned_spot_node(tmp_path):
    gate = tmp_path / "gate"
    wait_gate = f'while [ ! -e {gate} ]; do sleep 0.05; done; echo "$AZ_BATCH_NODE_ID $AZ_BATCH_NODE_IS_DEDICATED"'
    with dask.config.set({"batchnb.preempt-return-after": 0.3}), \
            temporary_pool("fallback", dedicated=1, spot=1, spot_fallback=1) as pool:
        wait_for(lambda: states(pool) == {"dedicated-0": "idle", "spot-0": "idle"}, 30, "both nodes idle")
        job = pool.job("fallback", max_task_retries=0)       # a requeue spent as a retry would fail it
        tasks = [job.add_task(f"t{i}", wait_gate) for i in range(2)]
        wait_for(lambda: states(pool) == {"dedicated-0": "running", "spot-0": "running"}, 30, "both running")
        victim = next(t for t in tasks if t.info().node == "spot-0")
        pool.preempt("spot-0")
        wait_for(lambda: states(pool)["spot-0"] in ("idle", "running"), 30, "spot-0 back from preemption")
        pool._dispatcher.call(lambda: None)       # one more dispatcher turn with spot-0 up
        # spot-0 is free, yet the preempted task waits for the busy dedicated node.
        assert states(pool)["spot-0"] == "idle" and victim.state == "active"
        gate.touch()
        result = job.wait(timeout=60, quiet=True)
        assert result.ok, result
        info = victim.info()
        assert victim.stdout().split() == ["dedicated-0", "true"] and info.node == "dedicated-0"
        assert (info.attempts, info.requeues) == (2, 1)
        tries = pool._dispatcher.call(lambda: pool._dispatcher.jobs["fallback"].tasks[victim.task_id].tries)
        assert tries == 0                          # the preemption spent no retry


def test_only_the_nth_preemption_sends_a_task_to_dedicated_nodes(tmp_path):
    gate = tmp_path / "gate"
    with dask.config.set({"batchnb.preempt-return-after": 0.3}), \
            temporary_pool("fallback-2", dedicated=1, spot=1, spot_fallback=2) as pool:
        wait_for(lambda: states(pool) == {"dedicated-0": "idle", "spot-0": "idle"}, 30, "both nodes idle")
        job = pool.job("fallback-2", max_task_retries=0)
        tasks = [job.add_task(f"t{i}", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo $AZ_BATCH_NODE_ID")
                 for i in range(2)]
        wait_for(lambda: states(pool) == {"dedicated-0": "running", "spot-0": "running"}, 30, "both running")
        victim = next(t for t in tasks if t.info().node == "spot-0")
        pool.preempt("spot-0")
        # One preemption of two: back on the spot node when it returns.
        wait_for(lambda: victim.state == "running" and victim.info().attempts == 2, 30, "the task running again")
        assert victim.info().node == "spot-0"
        pool.preempt("spot-0")
        wait_for(lambda: states(pool)["spot-0"] in ("idle", "running"), 30, "spot-0 back again")
        pool._dispatcher.call(lambda: None)
        assert states(pool)["spot-0"] == "idle" and victim.state == "active"
        gate.touch()
        assert job.wait(timeout=60, quiet=True).ok
        info = victim.info()
        assert (victim.stdout().strip(), info.attempts, info.requeues) == ("dedicated-0", 3, 2)


def test_without_spot_fallback_a_preempted_task_takes_the_returned_spot_node(tmp_path):
    """The behaviour spot_fallback changes: by default a requeued task goes wherever a slot is free."""
    gate = tmp_path / "gate"
    with dask.config.set({"batchnb.preempt-return-after": 0.3}), \
            temporary_pool("no-fallback", dedicated=1, spot=1) as pool:
        wait_for(lambda: states(pool) == {"dedicated-0": "idle", "spot-0": "idle"}, 30, "both nodes idle")
        job = pool.job("no-fallback", max_task_retries=0)
        tasks = [job.add_task(f"t{i}", f"while [ ! -e {gate} ]; do sleep 0.05; done") for i in range(2)]
        wait_for(lambda: states(pool) == {"dedicated-0": "running", "spot-0": "running"}, 30, "both running")
        victim = next(t for t in tasks if t.info().node == "spot-0")
        pool.preempt("spot-0")
        wait_for(lambda: victim.state == "running" and victim.info().node == "spot-0", 30, "the task back on spot-0")
        gate.touch()
        assert job.wait(timeout=60, quiet=True).ok


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_a_bad_spot_fallback_is_refused_before_any_node_starts(tmp_path, value):
    with pytest.raises(bnb.SpecError, match="expected a whole number of preemptions, 0 or more") as err:
        bnb.Pool("bad-fallback", dedicated=1, spot=1, spot_fallback=value, ledger=str(tmp_path / "l.sqlite"))
    assert err.value.field == "spot_fallback" and err.value.value == value
