"""End to end: a local pool priced as a cloud size meters real jobs, stops them at their
budgets and can be priced again from its ledger.

The price table is of round numbers: 3.6 $/h dedicated = 0.001 $ per node-second.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import dask
import pytest

import batchnb as bnb
import batchnb._config  # noqa: F401 - its defaults are in dask.config before a dask.config.set of ours
from batchnb.cli.cost import register, run as cli_run
from batchnb.cost import cost_from_ledger
from batchnb.engine.events import CostSample, JobStateChanged, NodeStateChanged
from batchnb.engine.ledger import Batch, Ledger

PRICES = {"Standard_X": {"dedicated": 3.6, "spot": 0.36}}
PER_SECOND = 0.001
RESUMED = "test_a_resumed_job_keeps_what_it_cost_before"


@pytest.fixture(scope="module")
def priced():
    with tempfile.TemporaryDirectory() as tmp:
        asked = time.time()
        pool = bnb.Pool("priced", dedicated=2, vm_size="Standard_X", price_table=PRICES,
                        tags={"team": "vision"}, ledger=Ledger(Path(tmp) / "ledger.sqlite"))
        try:
            yield pool, asked
        finally:
            pool.close()


@pytest.fixture(scope="module")
def mixed():
    """One dedicated and one spot node of two slots each."""
    with tempfile.TemporaryDirectory() as tmp:
        pool = bnb.Pool("mixed", dedicated=1, spot=1, task_slots_per_node=2, vm_size="Standard_X",
                        price_table=PRICES, ledger=Ledger(Path(tmp) / "ledger.sqlite"))
        try:
            yield pool
        finally:
            pool.close()


class _Seen(list):
    """Events of some kinds, as the bus delivers them; ``until(pred)`` waits (bounded) for one."""

    def __init__(self, pool, kinds):
        super().__init__()
        self.cond = threading.Condition()
        self.sub = pool.bus.subscribe(self._got, kinds=kinds)

    def _got(self, events):
        with self.cond:
            self.extend(events)
            self.cond.notify_all()

    def until(self, pred, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(pred(e) for e in self), timeout)


def _events(pool, kinds):
    seen = _Seen(pool, kinds)
    return seen, seen.sub


def test_job_cost_is_nodes_times_seconds_times_price(priced, unique):
    pool, asked = priced
    samples, sub = _events(pool, (CostSample,))
    started = time.time()
    job = pool.job(unique, tags={"cost_center": "cc-7"})
    job.add_tasks([{"id": f"t{i}", "command": "sleep 1"} for i in range(4)])
    result = job.wait(timeout=30, quiet=True)
    now = time.time()
    assert result.ok and result.cost is not None
    whole = pool.cost(now=now)
    # Two nodes, billed since each was first seen (the ledger's node timeline) ...
    first = {}
    for row in pool.ledger.node_history("priced"):
        first.setdefault(row["node_id"], row["time"])
    assert sorted(first) == ["dedicated-0", "dedicated-1"]
    expected = sum(now - t for t in first.values()) * PER_SECOND
    assert whole.total == pytest.approx(expected, rel=0.05)
    assert whole.node_seconds["dedicated"] == pytest.approx(expected / PER_SECOND, rel=0.05)
    # ... which is no earlier than the pool was asked for, nor later than the job began.
    assert all(asked <= t <= started for t in first.values())
    assert whole.idle == pytest.approx(whole.total - whole.busy) and whole.idle > 0

    cost = job.cost()
    # Each task paid for the seconds it held its one-slot node (at least its second of sleep).
    assert set(cost.by_task) == {"t0", "t1", "t2", "t3"}
    for row in cost.rows:
        assert row["cost"] == pytest.approx(row["seconds"] * PER_SECOND, rel=1e-9)
        assert 1.0 <= row["seconds"] < 3.0 and row["attempts"] == 1
    assert sum(cost.by_task.values()) == pytest.approx(cost.total, rel=1e-9)
    assert whole.by_job[unique] == pytest.approx(cost.total, rel=1e-9)    # the job's busy part of the pool
    frame = cost.frame()
    assert list(frame["task_id"]) == ["t0", "t1", "t2", "t3"]
    assert set(frame["cost_center"]) == {"cc-7"} and set(frame["team"]) == {"vision"}
    assert cost.by_tag("cost_center") == {"cc-7": pytest.approx(cost.total)}
    assert result.cost.total == pytest.approx(cost.total, rel=1e-9)
    # wait()'s summary carries the totals; the row per task is job.cost()'s (a million rows otherwise)
    assert result.cost.by_task == {} and result.cost.rows == ()
    assert pool.ledger.job(unique)["tags"] == json.dumps({"cost_center": "cc-7"})

    done = job.forecast()     # a finished job's forecast is what it cost
    assert done.total_cost == pytest.approx(cost.total) and done.remaining_seconds == 0.0
    # A task of "sleep 1" lasts a second and what starting it takes: more under load (1.39 s in a CI run).
    assert 1.0 <= done.mean_duration < 3.0
    # the final sample follows the last task's end by a turn of the dispatcher
    assert samples.until(lambda s: s.job_id == unique and s.rate_per_hour == 0)
    sub.close()
    mine = [s for s in samples if s.job_id == unique]
    assert mine and mine[-1].total == pytest.approx(cost.total, rel=1e-6) and mine[-1].rate_per_hour == 0
    assert any(s.job_id is None and s.total > 0 for s in samples)

    again = cost_from_ledger(pool.ledger, job_id=unique)     # after the fact, from the ledger
    assert again.total == pytest.approx(cost.total, rel=0.001)
    assert again.by_tag("cost_center") == {"cc-7": pytest.approx(cost.total, rel=0.001)}


def test_forecast_while_running(priced, unique):
    pool, _ = priced
    job = pool.job(unique)
    job.add_tasks([{"id": f"t{i}", "command": "sleep 0.5"} for i in range(8)])
    deadline = time.monotonic() + 20
    while job.counts()["succeeded"] < 2 and time.monotonic() < deadline:
        with job._run.changed:
            job._run.changed.wait(0.2)
    f = job.forecast()
    assert 0.5 <= f.mean_duration < 1.5
    # 8 tasks of the mean duration, one slot each, at 0.001 $/s.
    assert f.total_cost == pytest.approx(8 * f.mean_duration * PER_SECOND, rel=0.3)
    assert f.finish_time > time.time() - 0.5
    result = job.wait(timeout=30, quiet=True)
    assert result.ok
    assert job.cost().total == pytest.approx(f.total_cost, rel=0.35)


def test_budget_stops_dispatching_and_ends_the_job(priced, unique):
    pool, _ = priced
    seen, sub = _events(pool, (JobStateChanged,))
    budget = 0.0035                     # three and a half tasks of one second
    job = pool.job(unique, budget=budget)
    job.add_tasks([{"id": f"t{i}", "command": "sleep 1"} for i in range(10)])
    result = job.wait(timeout=30, quiet=True)
    sub.close()
    assert result.reason == "budget" and pool.ledger.job(unique)["reason"] == "budget"
    assert not result.ok
    spent = job.cost().total
    assert 0.0015 < spent <= budget * 1.05       # not past it: dispatching stopped in time
    assert result.counts["succeeded"] >= 2 and result.counts["cancelled"] >= 6
    assert any(e.job_id == unique and e.reason == "budget" and e.state == "completed" for e in seen)


def test_budget_reached_while_running_kills_the_tasks(priced, unique):
    pool, _ = priced
    budget = 0.002                      # two nodes x one second of the 30-second tasks
    job = pool.job(unique, budget=budget, budget_warn_fraction=0.5)
    started = time.monotonic()
    job.add_tasks([{"id": f"t{i}", "command": "sleep 30"} for i in range(3)])
    result = job.wait(timeout=20, quiet=True)
    took = time.monotonic() - started
    assert result.reason == "budget" and pool.ledger.job(unique)["reason"] == "budget"
    assert took < 5
    assert job.cost().total == pytest.approx(budget, rel=0.05)
    kinds = {(e["kind"], e["state"]) for e in pool.ledger.events(unique)}
    assert ("cost", "budget_warning") in kinds and ("cost", "budget") in kinds
    attempts = pool.ledger.attempts(unique)
    assert {a["state"] for a in attempts} == {"terminated"}


def _tiny(i):
    return i


def test_bundled_tiny_tasks_share_their_slot(priced, unique):
    pool, _ = priced
    job = pool.job(unique)
    started = time.time()
    job.map(_tiny, range(400))
    assert job.wait(timeout=30, quiet=True).ok
    wall = time.time() - started
    rides = {}
    for a in pool.ledger.attempts(unique):
        rides[(a["node"], a["dispatched"])] = rides.get((a["node"], a["dispatched"]), 0) + 1
    assert max(rides.values()) > 1                     # the dispatcher did bundle them
    cost = job.cost()
    assert len(cost.by_task) == 400 and all(r["attempts"] == 1 for r in cost.rows)   # every one metered
    assert sum(cost.by_task.values()) == pytest.approx(cost.total, rel=1e-9)
    assert cost.total <= 2 * wall * PER_SECOND          # never more slot time than the two nodes had
    assert cost_from_ledger(pool.ledger, job_id=unique).total == pytest.approx(cost.total, rel=0.01)


def test_a_resumed_job_keeps_what_it_cost_before(priced, unique):
    """Attempts of an earlier process (written here by hand) count towards cost and budget."""
    pool, _ = priced
    led, t0 = pool.ledger, time.time() - 100
    led.create_job(unique, {"id": unique, "budget": 0.05, "tags": {"team": "nlp"}}, "priced", t0, {"team": "nlp"})
    led.add_tasks(unique, [("done", 0, json.dumps({"id": "done", "command": "true"}), "succeeded"),
                           ("todo", 1, json.dumps({"id": "todo", "command": "sleep 0.2"}), "active")], t0)
    b = Batch()
    b.attempt(unique, "done", 1, node="dedicated-0", state="succeeded", dispatched=t0 + 10, start=t0 + 10,
              end=t0 + 20)             # ten seconds of a node of this pool's size: 0.01 $
    led.commit(b)
    job = pool.job(unique, budget=0.05, tags={"team": "nlp"})
    result = job.wait(timeout=20, quiet=True)
    assert result.ok
    cost = job.cost()
    assert cost.by_task["done"] == pytest.approx(10 * PER_SECOND, rel=1e-6)
    assert cost.by_task["todo"] == pytest.approx(0.2 * PER_SECOND, rel=0.5)
    assert cost.total == pytest.approx(sum(cost.by_task.values()))
    assert cost_from_ledger(led, job_id=unique).total == pytest.approx(cost.total, rel=0.001)


def test_slots_and_spot_nodes_are_priced_apart(mixed, unique):
    job = mixed.job(unique)
    job.add_tasks([{"id": f"t{i}", "command": "sleep 1"} for i in range(4)])    # two on each node at once
    assert job.wait(timeout=30, quiet=True).ok
    cost = job.cost()
    nodes = {t.id: t.node for t in job.tasks()}
    assert {n.split("-")[0] for n in nodes.values()} == {"dedicated", "spot"}
    for row in cost.rows:                   # half a node (one of two slots) for its seconds
        hourly = PRICES["Standard_X"]["spot" if nodes[row["task_id"]].startswith("spot") else "dedicated"]
        assert row["cost"] == pytest.approx(row["seconds"] * hourly / 3600 / 2, rel=1e-9)
        assert row["node_seconds"] == pytest.approx(row["seconds"] / 2, rel=1e-9)
    assert cost.by_group["dedicated"] > 5 * cost.by_group["spot"] > 0
    # Two separate Dask tasks went to each node in one dispatcher turn: the ledger knows they are no bundle.
    rides = {}
    for a in mixed.ledger.attempts(unique):
        rides[(a["node"], a["dispatched"])] = rides.get((a["node"], a["dispatched"]), 0) + 1
    assert max(rides.values()) == 2 and {a["slots"] for a in mixed.ledger.attempts(unique)} == {1.0}
    again = cost_from_ledger(mixed.ledger, job_id=unique)
    assert again.total == pytest.approx(cost.total, rel=0.01)
    assert again.by_task == pytest.approx(cost.by_task, rel=0.01)


def test_a_preempted_spot_node_stops_billing(mixed):
    with dask.config.set({"batchnb.preempt-return-after": "1h"}):
        mixed.preempt("spot-0")
    before = mixed.cost()
    assert before.rate_per_hour == pytest.approx(PRICES["Standard_X"]["dedicated"])   # the spot node no more
    assert mixed.ledger.node_history("mixed")[-1]["node_id"] == "spot-0"
    assert mixed.ledger.node_history("mixed")[-1]["state"] == "preempted"
    assert mixed.cost().by_group["spot"] == before.by_group["spot"]


def test_a_node_scaled_away_stops_billing(mixed):
    """Scale up then down: the new node bills from when it was first seen (``starting`` when the
    poll sees the request before the worker is up) to its release."""
    seen, sub = _events(mixed, (NodeStateChanged,))
    mixed.resize(dedicated=2)
    assert seen.until(lambda e: e.node_id == "dedicated-1", timeout=10)
    mixed.resize(dedicated=1)
    # released whether or not its worker had joined meanwhile
    assert seen.until(lambda e: e.node_id == "dedicated-1" and e.state == "offline", timeout=15)
    sub.close()
    billed = {"starting", "idle", "running", "start_task_failed", "unusable", "leaving"}
    up = [n for n in mixed.nodes() if n.state in billed]
    assert "dedicated-1" not in {n.id for n in up}
    cost = mixed.cost()
    assert cost.rate_per_hour == pytest.approx(sum(PRICES["Standard_X"][n.group] for n in up))
    rows = [r for r in mixed.ledger.node_history("mixed") if r["node_id"] == "dedicated-1"]
    assert rows[0]["state"] in ("starting", "idle") and rows[-1]["state"] == "offline"
    seconds = rows[-1]["time"] - rows[0]["time"]
    again = cost_from_ledger(mixed.ledger, pool="mixed", until=time.time())
    assert again.node_seconds["dedicated"] == pytest.approx(cost.node_seconds["dedicated"], rel=0.01)
    assert seconds > 0


def test_closed_pool_priced_from_the_ledger_and_the_command(priced, unique):
    pool, _ = priced
    pool.close()
    live = pool.cost()
    assert live.rate_per_hour == 0.0                     # every node released at close
    later = pool.cost()
    assert later.total == live.total                     # and billing has stopped
    # The resumed job's attempt "of an earlier process" is in the ledger, not in this pool's meter.
    earlier = 10 * PER_SECOND if pool.ledger.job(RESUMED) else 0.0
    again = cost_from_ledger(pool.ledger, pool="priced")
    assert again.total == pytest.approx(live.total + earlier, rel=0.001)
    assert again.busy == pytest.approx(live.busy + earlier, rel=0.01)
    # the same timeline on a size ten times the price
    tenfold = cost_from_ledger(pool.ledger, pool="priced", prices=bnb.PriceTable({"Standard_Y": {"dedicated": 36}}),
                               vm_size="Standard_Y")
    assert tenfold.total == pytest.approx(10 * again.total, rel=1e-9)

    parser = argparse.ArgumentParser(prog="batchnb")
    register(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    args = parser.parse_args(["cost", "--json", "--by", "team", "--ledger", str(pool.ledger.path)])
    assert cli_run(args, out) == 0
    doc = json.loads(out.getvalue())
    assert doc["total"] == pytest.approx(live.total + earlier, rel=0.001)
    by_team = live.by_tag("team")
    assert doc["by_tag"]["vision"] == pytest.approx(by_team["vision"], rel=0.01)
    assert doc["by_tag"]["(idle)"] == pytest.approx(by_team["(idle)"], rel=0.01)
    if earlier:
        assert doc["by_tag"]["nlp"] == pytest.approx(by_team["nlp"] + earlier, rel=0.01)
    out = io.StringIO()
    assert cli_run(parser.parse_args(["cost", "--ledger", str(pool.ledger.path)]), out) == 0
    assert "pool priced:" in out.getvalue() and "idle" in out.getvalue()


def test_a_job_re_attached_in_another_pool_has_its_cost_and_budget(tmp_path):
    """Pool A spends on two jobs and closes; pool B (as a re-run notebook makes) re-attaches them.
    The finished job shows what it cost before; the one already past its budget (A checked it
    only at dispatch: ``budget-check`` of an hour) dispatches nothing more and ends at it."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    options = dict(dedicated=1, vm_size="Standard_X", price_table=PRICES, ledger=ledger)
    with dask.config.set({"batchnb.budget-check": "1h"}):
        a = bnb.Pool("again", **options)
    try:
        fin = a.job("fin", on_all_tasks_complete="terminate")
        fin.add_tasks([{"id": "t0", "command": "sleep 0.3"}])
        over = a.job("over", budget=0.0006)            # 0.6 s of the node
        over.add_tasks([{"id": "t0", "command": "sleep 1"}])
        assert fin.wait(timeout=20, quiet=True).ok and over.wait(timeout=20, quiet=True).ok
        before = {j: cost_from_ledger(ledger, job_id=j).total for j in ("fin", "over")}
        assert before["over"] > 0.0006 and before["fin"] >= 0.0003
    finally:
        a.close()
    b = bnb.Pool("again", **options)
    try:
        fin = b.job("fin", on_all_tasks_complete="terminate")
        assert fin.cost().total == pytest.approx(before["fin"], rel=1e-6)
        assert fin.result().cost.total == pytest.approx(before["fin"], rel=1e-6)
        over = b.job("over", budget=0.0006)
        assert over.cost().by_task == pytest.approx({"t0": before["over"]}, rel=1e-6)
        over.add_tasks([{"id": "t1", "command": "sleep 1"}])
        result = over.wait(timeout=10, quiet=True)
        assert result.reason == "budget" and result.counts.get("cancelled") == 1
        assert ledger.attempts("over", "t1") == []       # nothing new was dispatched
        assert result.cost.total == pytest.approx(before["over"], rel=1e-6)
    finally:
        b.close()
