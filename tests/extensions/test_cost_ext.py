"""The cost extension's checks, the ledger replay (cost_from_ledger) and ``batchnb cost``.

The ledger timelines are written by hand with the ledger's own API, at a
price of 3600 $/h (1 $ per node-second) so every amount is exact.
"""

from __future__ import annotations

import argparse
import io
import json

import pytest

import batchnb as bnb
from batchnb.cli.cost import register, run as cli_run
from batchnb.cost.value import merge
from batchnb.cost.prices import check_job_tags, check_prices
from batchnb.cost import CostMeter, PriceTable, cost_from_ledger
from batchnb.errors import SpecError
from batchnb.engine.ledger import Batch
from batchnb.spec import PoolSpec

SIZE = "Standard_T2"


def _priced(t, pool="p", slots=1, prices=(3600.0, 1800.0), tags=None):
    b = Batch()
    b.event(t, "pool", None, None, "priced",
            {"pool": pool, "vm_size": SIZE, "region": None, "slots": slots, "currency": "USD",
             "prices": {"dedicated": prices[0], "spot": prices[1]}, "tags": tags or {"team": "vision"}})
    return b


def _job(ledger, job_id, tasks, pool="p", tags=None, t=0.0):
    ledger.create_job(job_id, {"id": job_id}, pool, t, tags or {})
    ledger.add_tasks(job_id, [(task, i, json.dumps({"id": task, "command": "true", **extra}), "succeeded")
                              for i, (task, extra) in enumerate(tasks.items())], t)


def _attempt(b, job_id, task, n, node, start, end, state="succeeded", slots=None):
    b.attempt(job_id, task, n, node=node, state=state, dispatched=start, start=start, end=end, slots=slots)


@pytest.fixture
def timeline(ledger):
    """Pool p: dedicated-0 up 10..100, spot-0 up 10..40 (preempted) and 50..100; job j: a, b; job k: c."""
    ledger.commit(_priced(0.0))
    _job(ledger, "j", {"a": {}, "b": {}}, tags={"cost_center": "cc1"})
    _job(ledger, "k", {"c": {}}, tags={"cost_center": "cc2"})
    b = Batch()
    for t, node, grp, state in [(10, "dedicated-0", "dedicated", "idle"), (10, "spot-0", "spot", "idle"),
                                (20, "dedicated-0", "dedicated", "running"), (40, "spot-0", "spot", "preempted"),
                                (50, "spot-0", "spot", "idle"), (100, "dedicated-0", "dedicated", "offline"),
                                (100, "spot-0", "spot", "offline")]:
        b.node("p", node, grp, state, float(t))
    _attempt(b, "j", "a", 1, "dedicated-0", 20.0, 30.0)
    _attempt(b, "j", "b", 1, "spot-0", 30.0, 40.0, state="requeued")     # preempted under it...
    _attempt(b, "j", "b", 2, "spot-0", 60.0, 64.0)                       # ...and run again
    _attempt(b, "k", "c", 1, "dedicated-0", 70.0, 80.0)
    b.job("j", state="completed", reason="all_tasks_complete", ended=64.0)
    b.job("k", state="completed", reason="all_tasks_complete", ended=80.0)
    ledger.commit(b)
    return ledger


def test_pool_cost_from_ledger_is_exact(timeline):
    c = cost_from_ledger(timeline, pool="p")
    # dedicated 90 s at 1 $/s; spot (30 + 50) s at 0.5 $/s
    assert c.by_group == {"dedicated": 90.0, "spot": 40.0} and c.total == 130.0
    assert c.node_seconds == {"dedicated": 90.0, "spot": 80.0}
    assert c.by_job == {"j": 10.0 + 5.0 + 2.0, "k": 10.0}
    assert c.busy == 27.0 and c.idle == 103.0
    assert c.by_tag("cost_center") == {"cc1": 17.0, "cc2": 10.0, "(idle)": 103.0}
    assert c.tags == {"team": "vision"}


def test_job_cost_from_ledger_lists_tasks_with_tags(timeline):
    c = cost_from_ledger(timeline, job_id="J")          # ids are case-insensitive, as in the ledger
    assert c.job_id == "j" and c.total == 17.0 and c.by_task == {"a": 10.0, "b": 7.0}
    frame = c.frame()
    assert list(frame.columns[-2:]) == ["cost_center", "team"]
    assert frame.set_index("task_id").loc["b", "attempts"] == 2
    assert _attached_cost(timeline, "k") == 10.0


def _attached_cost(ledger, job_id):
    """A job attached without a pool is priced from the ledger."""
    return bnb.Job.attach(job_id, ledger=ledger).cost().total


def test_reprice_the_same_timeline_on_another_size(timeline):
    prices = PriceTable({"Standard_Big": {"dedicated": 7200.0, "spot": 360.0}})
    c = cost_from_ledger(timeline, pool="p", prices=prices, vm_size="Standard_Big")
    assert c.by_group == {"dedicated": 180.0, "spot": 8.0}
    with pytest.raises(SpecError, match="vm_size"):
        cost_from_ledger(timeline, pool="p", prices=prices, vm_size="Standard_Nope")


def test_attempts_are_priced_by_the_slots_they_held(ledger):
    """One dispatcher turn sent two Dask tasks to a node of four slots (1 $/s, 0.25 $ per slot-second):
    a bundle of three tiny tasks sharing one slot, and a task of two slots. Same node, same time."""
    ledger.commit(_priced(0.0, slots=4))
    _job(ledger, "j", {"x": {}, "y": {}, "z": {}, "w": {"required_slots": 2}})
    b = Batch()
    b.node("p", "dedicated-0", "dedicated", "idle", 0.0)
    for task in ("x", "y", "z"):
        _attempt(b, "j", task, 1, "dedicated-0", 10.0, 16.0, slots=1 / 3)
    _attempt(b, "j", "w", 1, "dedicated-0", 10.0, 16.0, slots=2)
    b.node("p", "dedicated-0", "dedicated", "offline", 20.0)
    ledger.commit(b)
    c = cost_from_ledger(ledger, job_id="j", until=20.0)
    assert c.by_task == pytest.approx({"x": 0.5, "y": 0.5, "z": 0.5, "w": 3.0}) and c.total == pytest.approx(4.5)


def test_separate_tasks_of_one_turn_hold_a_slot_each(ledger):
    """Four one-slot tasks dispatched together to a four-slot node are not a bundle."""
    ledger.commit(_priced(0.0, slots=4))
    _job(ledger, "j", {f"t{i}": {} for i in range(4)})
    b = Batch()
    b.node("p", "dedicated-0", "dedicated", "idle", 0.0)
    for i in range(4):
        _attempt(b, "j", f"t{i}", 1, "dedicated-0", 10.0, 18.0, slots=1)
    ledger.commit(b)
    assert cost_from_ledger(ledger, job_id="j", until=20.0).by_task == {f"t{i}": 2.0 for i in range(4)}


def test_rows_of_older_ledgers_without_slots_are_grouped_by_dispatch(ledger):
    ledger.commit(_priced(0.0))
    _job(ledger, "j", {"x": {}, "y": {}, "z": {}})
    b = Batch()
    b.node("p", "dedicated-0", "dedicated", "idle", 0.0)
    for task in ("x", "y", "z"):                       # guessed: one Dask task carried three tiny tasks
        _attempt(b, "j", task, 1, "dedicated-0", 10.0, 16.0)
    b.node("p", "dedicated-0", "dedicated", "offline", 20.0)
    ledger.commit(b)
    c = cost_from_ledger(ledger, job_id="j", until=20.0)
    assert c.by_task == {"x": 2.0, "y": 2.0, "z": 2.0} and c.total == 6.0


def test_an_older_ledger_gets_the_slots_column(tmp_path):
    import sqlite3

    from batchnb.engine.ledger import Ledger
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:       # the attempts table as ledgers made before had it
        con.execute("CREATE TABLE attempts(job_id TEXT NOT NULL COLLATE NOCASE, task_id TEXT NOT NULL COLLATE "
                    "NOCASE, n INTEGER NOT NULL, node TEXT, state TEXT NOT NULL, dispatched REAL, start REAL, "
                    "end REAL, exit_code INTEGER, category TEXT, message TEXT, task_dir TEXT, bytes_in INTEGER, "
                    "bytes_out INTEGER, stage_in_seconds REAL, stage_out_seconds REAL, stdout_tail TEXT, "
                    "stderr_tail TEXT, PRIMARY KEY(job_id, task_id, n))")
        con.execute("INSERT INTO attempts(job_id, task_id, n, state) VALUES ('j', 'a', 1, 'succeeded')")
    con.close()
    for _ in range(2):                       # and opening it again finds it there
        led = Ledger(path)
        b = Batch()
        b.attempt("j", "b", 1, node="n", state="running", dispatched=1.0, slots=0.5)
        led.commit(b)
    assert [(a["task_id"], a["slots"]) for a in led.attempts("j")] == [("a", None), ("b", 0.5)]


def test_a_new_pool_of_the_same_name_ends_what_the_old_one_left_open(ledger):
    """A driver that died without closing left dedicated-0 billed; the next pool p starts afresh."""
    ledger.commit(_priced(0.0))
    b = Batch()
    b.node("p", "dedicated-0", "dedicated", "idle", 0.0)
    b.node("p", "dedicated-0", "dedicated", "running", 30.0)   # last sign of life of the first pool
    ledger.commit(b)
    ledger.commit(_priced(1000.0))
    b = Batch()
    b.node("p", "dedicated-0", "dedicated", "idle", 1000.0)
    b.node("p", "dedicated-0", "dedicated", "offline", 1010.0)
    ledger.commit(b)
    assert cost_from_ledger(ledger, pool="p").total == 30.0 + 10.0


def test_running_attempts_count_up_to_until(timeline):
    b = Batch()
    timeline.create_job("live", {"id": "live"}, "p", 0.0, {})
    timeline.add_tasks("live", [("t", 0, json.dumps({"id": "t", "command": "true"}), "running")], 0.0)
    b.attempt("live", "t", 1, node="dedicated-0", state="running", dispatched=90.0)
    timeline.commit(b)
    assert cost_from_ledger(timeline, job_id="live", until=95.0).total == 5.0
    with pytest.raises(SpecError, match="job id"):
        cost_from_ledger(timeline, job_id="nope")
    with pytest.raises(SpecError, match="name a job"):
        cost_from_ledger(timeline)
    with pytest.raises(SpecError, match=r"pool: 'q' is invalid: not in the ledger .*\(pools with prices: p\)"):
        cost_from_ledger(timeline, pool="q")


def test_merge_adds_a_resumed_jobs_earlier_cost():
    meter = CostMeter(PriceTable({SIZE: {"dedicated": 3600.0}}), SIZE)
    meter.node_requested("n", "dedicated", t=0.0)
    meter.task_started("j", "a", "n", slots=1, t=0.0)
    meter.task_ended("j", "a", "n", t=4.0)
    before = meter.cost(now=5.0, job_id="j")
    meter.task_started("j", "a", "n", slots=1, t=10.0)
    meter.task_ended("j", "a", "n", t=13.0)
    after = meter.cost(now=20.0, job_id="j")           # the meter holds both; pretend they are two runs
    both = merge(before, after)
    assert both.total == before.total + after.total == 4.0 + 7.0
    assert both.by_task == {"a": 11.0}
    assert [r["attempts"] for r in both.rows] == [3]


# ------------------------------------------------------------ checks at Pool(...) time


def test_prices_are_checked_before_any_node_starts():
    spec = PoolSpec(vm_size="Standard_X")
    assert check_prices({"Standard_X": {"dedicated": 3.6}}, spec).price("Standard_X", "dedicated") == 3.6
    assert check_prices(None, PoolSpec()) is None
    assert check_prices(None, PoolSpec(vm_size="D4s_v5", region="eastus")).date      # the shipped snapshot
    with pytest.raises(SpecError, match="vm_size"):
        check_prices({"Standard_X": {"dedicated": 3.6}}, PoolSpec())
    with pytest.raises(SpecError, match="price_table"):
        check_prices(42, spec)
    with pytest.raises(SpecError, match="no spot price"):
        check_prices({"Standard_X": {"dedicated": 3.6}}, PoolSpec(vm_size="Standard_X", spot=1))
    with pytest.raises(SpecError, match="Standard_Nope"):        # a local pool's size serves only pricing
        check_prices(None, PoolSpec(vm_size="Standard_Nope"))
    # a cloud pool of a size the snapshot lacks is made, metered at 0
    assert check_prices(None, PoolSpec(backend="azure", vm_size="Standard_Nope")) is None
    with pytest.raises(SpecError, match="Standard_Nope"):        # but a table given must price it
        check_prices({"Standard_X": {"dedicated": 1.0}}, PoolSpec(backend="azure", vm_size="Standard_Nope"))
    with pytest.raises(SpecError, match="tag name"):
        check_prices(None, PoolSpec(tags={"cost": "x"}))


def test_pool_with_an_unknown_size_fails_at_once(home):
    with pytest.raises(SpecError, match="Standard_D4s_v9") as err:
        bnb.Pool("nope", dedicated=1, vm_size="Standard_D4s_v9")
    assert err.value.field == "vm_size" and "Standard_D4s_v5" in str(err.value)   # names close sizes


def test_job_tags_that_shadow_report_columns_are_refused():
    check_job_tags("j", {"tags": {"cost_center": "a"}})
    with pytest.raises(SpecError, match="task_id"):
        check_job_tags("j", {"tags": {"task_id": "a"}})
    with pytest.raises(SpecError, match="cost"):
        check_job_tags(bnb.JobSpec("j", tags={"cost": "a"}), {})


# ------------------------------------------------------------ batchnb cost


def _cli(ledger, *argv):
    parser = argparse.ArgumentParser(prog="batchnb")
    register(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    assert cli_run(parser.parse_args(["cost", *argv, "--ledger", str(ledger.path)]), out) == 0
    return out.getvalue()


def test_cli_pool_report(timeline):
    text = _cli(timeline)
    assert "pool p: 130 USD (dedicated 90 USD, spot 40 USD); held by tasks 27 USD, idle 103 USD" in text
    lines = text.splitlines()
    assert lines[1].split() == ["job_id", "tasks", "attempts", "node_seconds", "cost", "cost_center", "team"]
    assert lines[2].split()[0] == "j" and lines[3].split()[0] == "k"        # the costliest first
    by = _cli(timeline, "--by", "cost_center")
    assert "cc1     17 USD" in by and "(idle)  103 USD" in by


def test_cli_job_report_and_json(timeline):
    text = _cli(timeline, "j", "--limit", "1")
    assert text.startswith("job j: 17 USD (dedicated 10 USD, spot 7 USD), 2 tasks")
    assert "tags: cost_center=cc1, team=vision" in text and "1 more" in text
    doc = json.loads(_cli(timeline, "j", "--json", "--by", "cost_center"))
    assert doc["total"] == 17.0 and doc["by_tag"] == {"cc1": 17.0}
    assert {r["task_id"]: r["cost"] for r in doc["rows"]} == {"a": 10.0, "b": 7.0}
    pools = json.loads(_cli(timeline, "--json", "--vm-size", "Standard_D4s_v5", "--region", "eastus"))
    assert pools["pools"][0]["by_group"]["dedicated"] == pytest.approx(90 * 0.192 / 3600)


def test_the_batchnb_command_has_the_cost_verb(timeline):
    import subprocess
    import sys
    run = lambda *argv: subprocess.run([sys.executable, "-m", "batchnb.cli", "--ledger", str(timeline.path),  # noqa: E731
                                        "cost", *argv], capture_output=True, text=True, timeout=60)
    done = run("j", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 17.0
    bad = run("nope")
    assert bad.returncode == 2 and "job id: 'nope' is invalid: not in the ledger" in bad.stderr
