"""How many tiny tasks a bundle takes (engine/bundles.py ``_bundle_size``), from the dispatcher's state.

No pool: the sizes are the dispatcher's arithmetic over its ready queue, its
nodes and the bundles in flight, set up here as the dispatcher holds them. A
bundle takes what lets its slot end when the others end what they have, their
backlogs estimated at the tasks' pace; near a job's end a node that frees first
no longer takes half of what is left while the other still runs a whole bundle.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from batchnb.engine.bundles import Bundles, balanced_share
from batchnb.engine.jobrun import TaskRun
from batchnb.engine.nodes import NodeTable
from batchnb.spec import TaskSpec
from batchnb.states import TaskState

PACE = 0.001        # a second per thousand tasks: bundle_target 0.2 s holds 200, its eighth 25


class Sizes(Bundles):
    """What ``_bundle_size`` reads of the dispatcher: its ready queue, nodes, bundles in flight and
    the tasks riding in them (each one a command, tiny, of one job)."""

    def __init__(self, nodes: int = 2):
        self._bundle_target = 0.2
        self._pace = {"python": None, "command": PACE}
        self.job = SimpleNamespace(pace=None)
        self.ready: list = []
        self.nodes = NodeTable()
        for i in range(nodes):
            self.nodes.up(f"n{i}", f"tcp://127.0.0.1:{9000 + i}", "dedicated", 1, 0.0)
        self.inflight: dict = {}
        self.queued_keys: dict = {}
        self.tasks: dict = {}
        self._seq = 0

    def _lookup(self, job_key, task_key):
        return self.job, self.tasks.get(task_key)

    def _tasks(self, n: int, dispatched: float | None = None) -> list:
        keys = []
        for _ in range(n):
            tr = TaskRun(TaskSpec(f"t{self._seq}", ["/bin/true"]), self._seq, TaskState.ACTIVE)
            tr.dispatched = dispatched
            self.tasks[tr.key] = tr
            keys.append(("job", tr.key, 1))
            self._seq += 1
        return keys

    def waiting(self, n: int) -> None:
        """``n`` tasks in the ready queue (the queue's length is all the sizes read of it)."""
        self.ready = self._tasks(n)

    def running(self, node_id: str, n: int, since: float) -> None:
        """A bundle of ``n`` tiny tasks runs on ``node_id`` since ``since``."""
        key = f"bundle-{node_id}-{len(self.inflight)}"
        self.inflight[key] = (None, node_id, self._tasks(n, dispatched=since), 1)
        self.nodes.take(self.nodes.nodes[node_id], key, 1, since)

    def queued(self, node_id: str, n: int) -> None:
        """A bundle of ``n`` tasks waits behind ``node_id``'s busy slot."""
        key = f"queued-{node_id}"
        self.nodes.nodes[node_id].queued, self.queued_keys[key] = key, self._tasks(n)

    def size(self, node_id: str, now: float, queued: bool = False) -> int:
        first = self.ready.pop(0)           # the task that opens the bundle is out of the queue
        return self._bundle_size(self.job, self.tasks[first[1]], self.nodes.nodes[node_id], now, queued)


def test_a_node_that_frees_first_near_the_end_takes_what_balances_the_other_nodes_bundle():
    # n1 started 150 tasks 30 ms ago (about 120 to go); 101 are ready as n0 frees. Split over the
    # two slots, n0 took 51 and was done 70 ms before n1, which then took the last 50 alone.
    d = Sizes()
    d.running("n1", 150, since=10.0)
    d.waiting(101)
    assert d.size("n0", now=10.030) == 101      # (101 + 120) / 2 would be 110: all of the 101


def test_a_node_freeing_mid_job_takes_a_full_bundle():
    d = Sizes()
    d.running("n1", 200, since=10.0)
    d.waiting(2_000)
    assert d.size("n0", now=10.1) == 200        # bundle_target's worth at the pace


def test_two_nodes_ending_together_split_what_is_left():
    d = Sizes()
    d.running("n1", 200, since=10.0)            # ended, by its pace: its result is on the way
    d.waiting(100)
    assert d.size("n0", now=10.25) == 50


def test_a_bundle_queued_behind_a_busy_slot_takes_its_share_of_the_end():
    # n0 has 100 to go, n1 50 and then a queued 40: of the 110 ready, n0's queued bundle takes
    # 50 (ending 150 tasks from now), leaving 60 for n1 (after its 90: 150 too).
    d = Sizes()
    d.running("n0", 150, since=10.0)
    d.running("n1", 100, since=10.0)
    d.queued("n1", 40)
    d.waiting(110)
    assert d.size("n0", now=10.05, queued=True) == 50


def test_what_is_left_goes_in_one_bundle_of_at_least_an_eighth_of_the_target():
    # Balanced, n0 would take 6 of the 12 left; a bundle of fewer than 25 (an eighth of
    # bundle_target at the pace) costs more in its round trip than the spread saves: all 12 go.
    d = Sizes()
    d.running("n1", 200, since=10.0)
    d.waiting(12)
    assert d.size("n0", now=10.25) == 25


def test_a_slot_busy_with_a_task_that_is_not_tiny_counts_as_free_soon():
    # When a long task ends is not known: the ready tasks are shared as if it ended now.
    d = Sizes()
    big = TaskRun(TaskSpec("big", ["sleep", "60"], inputs=[{"url": "memory://x", "path": "x"}]),
                  0, TaskState.RUNNING)
    big.dispatched = 10.0
    d.tasks["big"] = big
    d.inflight["long"] = (None, "n1", [("job", "big", 1)], 1)
    d.nodes.take(d.nodes.nodes["n1"], "long", 1, 10.0)
    d.waiting(101)
    assert d.size("n0", now=10.030) == 51


def test_slots_free_together_share_the_ready_tasks_evenly():
    d = Sizes(nodes=4)
    d.waiting(8)
    assert d.size("n0", now=10.0) == 2


@pytest.mark.parametrize("ready, others, own, share", [
    (100, [0.0], 0.0, 50), (100, [80.0], 0.0, 90), (10, [80.0], 0.0, 10), (100, [30.0], 50.0, 40),
    (3, [0.0], 40.0, 1), (9, [0.0, 0.0], 0.0, 3), (1, [], 0.0, 1)])
def test_balanced_share_ends_every_slot_together(ready, others, own, share):
    assert balanced_share(ready, others, own) == share
