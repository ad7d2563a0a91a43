"""Autoscale on live local pools: formulas and callables, evaluate without applying, deallocation options.

(Named apart from tests/test_autoscale.py, the pure policy's tests.)
"""

from __future__ import annotations


import dask
import pytest

import batchnb as bnb
from waiting import wait_for
from batchnb.extensions.autoscale import AutoscaleExtension
from batchnb.engine.events import NodeStateChanged, PoolTargets
from batchnb.engine.ledger import Ledger


@pytest.fixture
def fast_sampling():
    with dask.config.set({"batchnb.autoscale-sample": 0.25}):
        yield


GROW_AND_SHRINK = """
// as many nodes as tasks waiting or running, at most 2; leave only when idle
$tasks = $PendingTasks.GetSample(1);
$TargetDedicatedNodes = min(2, $tasks);
$NodeDeallocationOption = taskcompletion;
"""


def test_formula_grows_from_zero_and_shrinks_back_to_zero(tmp_path, fast_sampling):
    with bnb.Pool("elastic", autoscale=GROW_AND_SHRINK, autoscale_interval=1,
                  ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        seen_up = set()
        sub = pool.bus.subscribe(lambda evs: seen_up.update(e.node_id for e in evs if e.state == "idle"),
                                 kinds=(NodeStateChanged,))
        assert pool.nodes() == []
        job = pool.job("burst", max_task_retries=0)
        for i in range(6):
            job.add_task(f"t{i}", "sleep 0.3")
        result = job.wait(timeout=60)
        assert result.ok and result.counts["succeeded"] == 6
        wait_for(lambda: pool.nodes() == [], 20, "the pool to shrink back to 0 nodes")
        sub.close()
        ext = pool.extension(AutoscaleExtension)
        applied = [(d, s) for _, d, s, _ in ext.log]
    assert seen_up == {"dedicated-0", "dedicated-1"}          # grew to 2, no more
    assert {t.node for t in job.tasks()} <= {"dedicated-0", "dedicated-1"}
    assert applied[0] == (0, 0) and (2, 0) in applied and applied[-1] == (0, 0)


class Dial:
    """A policy the test turns by hand: returns whatever it was last set to."""

    def __init__(self, *targets):
        self.targets = targets

    def __call__(self, m):
        return self.targets


def test_callable_policy_evaluate_without_applying_and_errors_keep_the_size(tmp_path, fast_sampling):
    dial = Dial(1, 0)
    with bnb.Pool("dial", autoscale=dial, autoscale_interval=0.5, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        wait_for(lambda: [n.state for n in pool.nodes()] == ["idle"], 20, "one node from the callable")
        # evaluate against live samples: nothing changes
        out = pool.evaluate_autoscale("$TargetLowPriorityNodes = $CurrentDedicatedNodes + 2;\n"
                                      "$TargetDedicatedNodes = $PendingTasks + 3; $n = $SampleNodeCount")
        assert (out["$TargetDedicatedNodes"], out["$TargetLowPriorityNodes"], out["$n"]) == (3.0, 3.0, 1.0)
        assert out["$NodeDeallocationOption"] == "requeue"
        assert pool.evaluate_autoscale(lambda m: (m.usable_node_count * 5, 1))["$TargetDedicatedNodes"] == 5.0
        assert pool.evaluate_autoscale()["$TargetDedicatedNodes"] == 1.0      # the pool's own policy
        with pytest.raises(bnb.FormulaError) as err:
            pool.evaluate_autoscale("$TargetDedicatedNodes = $PendingTasks /")
        assert err.value.line == 1
        # a policy that raises: Azure keeps the pool's size and says why
        failures = []
        sub = pool.bus.subscribe(lambda evs: failures.extend(e for e in evs if e.reason and "failed" in e.reason),
                                 kinds=(PoolTargets,))
        dial.targets = "many"
        wait_for(lambda: failures, 10, "a PoolTargets event reporting the failed evaluation")
        sub.close()
        assert "return value of autoscale policy" in failures[0].reason
        assert [n.id for n in pool.nodes()] == ["dedicated-0"]
        assert pool.extension(AutoscaleExtension).last_error
        # per-group targets: spot nodes come up as a group of their own
        dial.targets = (1, 2)
        wait_for(lambda: sorted((n.group, n.state) for n in pool.nodes())
                 == [("dedicated", "idle"), ("spot", "idle"), ("spot", "idle")], 20, "1 dedicated + 2 spot")
        hist = pool.extension(AutoscaleExtension).history
        wait_for(lambda: hist.latest("spot.Nodes") == 2 and hist.latest("$CurrentLowPriorityNodes") == 2, 5,
                 "per-group samples")


def test_deallocation_requeue_terminate_and_taskcompletion(tmp_path, fast_sampling):
    dial = Dial(3, 0)
    with bnb.Pool("dealloc", autoscale=dial, autoscale_interval=0.3, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        wait_for(lambda: [n.state for n in pool.nodes()].count("idle") == 3, 30, "three idle nodes")
        job = pool.job("long", max_task_retries=0)
        for i in range(3):
            job.add_task(f"t{i}", "sleep 2")
        wait_for(lambda: [n.state for n in pool.nodes()].count("running") == 3, 20, "three running nodes")
        ext = pool.extension(AutoscaleExtension)

        # terminate: the removed node's task fails at once, as "terminated"
        dial.targets = (2, 0, "terminate")
        failed = wait_for(lambda: [t for t in job.tasks() if t.state == "failed"], 10, "a terminated task")
        assert failed[0].category == "terminated"
        # requeue: the next removed node's task goes back to the queue and runs again
        dial.targets = (1, 0, "requeue")
        wait_for(lambda: any(t.requeues for t in job.tasks()), 10, "a requeued task")
        # taskcompletion: the last node is drained, keeps its task to the end, then leaves
        dial.targets = (0, 0, "taskcompletion")
        wait_for(lambda: ext.draining, 10, "a draining node")
        draining = next(iter(ext.draining))
        assert {n.id: n.state for n in pool.nodes()}[draining] == "running"
        dial.targets = (0, 0, "taskcompletion")
        # the requeued task has no node now; give it one back once the drained node is gone
        wait_for(lambda: draining not in {n.id for n in pool.nodes()}, 20, "the drained node to leave")
        dial.targets = (1, 0)
        result = job.wait(timeout=30)
    states = {t.id: (t.state, t.requeues, t.category) for t in job.tasks()}
    assert sorted(s for s, _, _ in states.values()) == ["failed", "succeeded", "succeeded"]
    assert sum(r for _, r, _ in states.values()) == 1
    assert result.counts["failed"] == 1
