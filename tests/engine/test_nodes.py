"""Placement and slot accounting of the node table, without Dask."""

from __future__ import annotations

from batchnb.engine.nodes import NodeTable
from batchnb.states import NodeState


def table(fill):
    t = NodeTable(fill)
    for i in range(3):
        t.up(f"dedicated-{i}", f"tcp://{i}", "dedicated", slots=2, now=0.0)
    return t


def place_one_slot_tasks(t, n):
    chosen = []
    for i in range(n):
        node = t.place(1)
        t.take(node, f"k{i}", 1, now=float(i))
        chosen.append(node.node_id)
    return chosen


def test_spread_uses_the_emptiest_node():
    assert len(set(place_one_slot_tasks(table("spread"), 3))) == 3


def test_pack_fills_one_node_first():
    chosen = place_one_slot_tasks(table("pack"), 4)
    assert chosen[0] == chosen[1] and chosen[2] == chosen[3] != chosen[0]


def test_slots_states_and_unschedulable_nodes():
    t = table("spread")
    node = t.place(2)
    t.take(node, "wide", 2, now=1.0)
    assert node.state == NodeState.RUNNING and node.free == 0
    t.give_back(node.node_id, "wide", 2, now=2.0)
    assert node.state == NodeState.IDLE and node.free == 2
    t.set_state("dedicated-1", NodeState.UNUSABLE, now=3.0)
    t.nodes["dedicated-2"].draining = True
    assert {t.place(1).node_id for _ in range(3)} == {"dedicated-0"}
    assert t.place(3) is None
    t.lost("dedicated-0", NodeState.PREEMPTED, now=4.0)
    assert t.place(1) is None and t.free_slots() == 0
    t.up("dedicated-0", "tcp://new", "dedicated", slots=2, now=5.0)
    assert t.place(1).address == "tcp://new" and "tcp://0" not in t.by_address
