"""The views' figures are true: the cost rows stop at the pool's close and equal the ledger's
cost, "nodes up" counts the nodes up, and a job's elapsed time stands still once it ended."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from waiting import wait_for

import batchnb as bnb
from batchnb.cost import Cost, cost_from_ledger
from batchnb.engine.events import JobStateChanged, TasksAdded, TaskStateChanged
from batchnb.engine.ledger import Ledger
from batchnb.ui.model import CostModel, JobModel

PRICES = {"Standard_X": {"dedicated": 3.6, "spot": 0.36}}


def test_elapsed_and_throughput_stand_still_after_the_end():
    m = JobModel("j", created=0.0)
    m.apply([TasksAdded("j", 2, 0.0, {"active": 2}),
             TaskStateChanged("j", "a", "running", "active", 5.0, 1, "dedicated-0"),
             TaskStateChanged("j", "b", "running", "active", 5.2, 1, "dedicated-1"),
             TaskStateChanged("j", "a", "succeeded", "running", 6.0, 1, "dedicated-0", 0),
             TaskStateChanged("j", "b", "succeeded", "running", 6.2, 1, "dedicated-1", 0)])
    ended = m.state(now=6.3)
    assert ended["elapsed"] == pytest.approx(1.2) and ended["throughput"] == pytest.approx(2 / 1.2, abs=1e-3)
    m.apply([JobStateChanged("j", "completed", 11.2, "all_tasks_complete")])    # completed later
    for now in (11.3, 60.0, 3600.0):
        s = m.state(now=now)
        assert (s["elapsed"], s["throughput"]) == (ended["elapsed"], ended["throughput"]), now


def test_group_rates_add_up_to_the_header_and_stop_at_close():
    m = CostModel("pool p")
    m.update(Cost(total=1.0, by_group={"dedicated": 0.8, "spot": 0.2}, rate_per_hour=3.0), now=10.0)
    m.update(Cost(total=1.5, by_group={"dedicated": 1.2, "spot": 0.3}, rate_per_hour=4.0), now=20.0)
    s = m.state()
    assert sum(g["rate"] for g in s["groups"].values()) == pytest.approx(s["rate"])
    assert sum(g["spent"] for g in s["groups"].values()) == pytest.approx(s["total"])
    m.close(Cost(total=1.6, by_group={"dedicated": 1.3, "spot": 0.3}, rate_per_hour=0.0), now=25.0)
    s = m.state()
    assert s["final"] and s["total"] == 1.6 and {g: v["spent"] for g, v in s["groups"].items()} == \
        {"dedicated": 1.3, "spot": 0.3}
    assert all(v["rate"] == 0 for v in s["groups"].values()) and s["rate"] == 0


def test_cost_view_counts_nodes_up_and_ends_on_the_ledger_cost():
    from batchnb.ui.views import CostView
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite")
        pool = bnb.Pool("figures", dedicated=2, vm_size="Standard_X", price_table=PRICES, ledger=ledger)
        try:
            view = CostView(pool)
            view.read_every = 0.0
            job = pool.job("work")
            job.add_tasks([{"id": f"t{i}", "command": "sleep 0.3"} for i in range(4)])
            job.wait(timeout=60, quiet=True)
            view.flush()
            view._read()
            view._sync()
            assert view.groups["dedicated"]["nodes_up"] == 2
        finally:
            pool.close()
        wait_for(lambda: view.final, 10, "the cost view to take the final figures")
        truth = cost_from_ledger(ledger, pool="figures")
        assert view.total == pytest.approx(truth.total, rel=1e-6)
        assert {g: v["spent"] for g, v in view.groups.items() if v["spent"]} == \
            pytest.approx({g: v for g, v in truth.by_group.items() if v}, rel=1e-6)
        assert view.rate == 0 and all(v["rate"] == 0 and v["nodes_up"] == 0 for v in view.groups.values())
        view.close()


def test_pool_view_links_to_the_dask_dashboard(pool2):
    from batchnb.ui.views import PoolView
    view = PoolView(pool2)
    try:
        assert view.dashboard and view.dashboard == pool2.client.dashboard_link
        assert view.dashboard.startswith("http://127.0.0.1:")
    finally:
        view.close()


def test_a_node_with_a_task_on_it_never_shows_idle():
    from types import SimpleNamespace

    from batchnb.ui.model import PoolModel

    def reading(state, used, running=()):
        return [SimpleNamespace(id="dedicated-0", group="dedicated", state=state, slots=1, used_slots=used,
                                cpu=None, memory=None, running=list(running))]
    m = PoolModel("p", reading("idle", 0))
    m.apply([TaskStateChanged("j", f"t{i}", "running", "active", 1.0, 1, "dedicated-0") for i in range(8)])
    m.update_nodes(reading("idle", 0))          # a reading taken before the tasks started
    node = m.state()["nodes"][0]
    assert (node["state"], node["used"], node["slots"]) == ("running", 1, 1) and len(node["running"]) == 8
    m.apply([TaskStateChanged("j", f"t{i}", "succeeded", "running", 2.0, 1, "dedicated-0", 0) for i in range(8)])
    m.update_nodes(reading("running", 1, ["t0"]))   # and one taken before they ended
    m.apply([TaskStateChanged("j", "t0", "succeeded", "running", 2.0, 1, "dedicated-0", 0)])
    node = m.state()["nodes"][0]
    assert (node["state"], node["used"], node["running"]) == ("idle", 0, [])


def test_a_job_views_counts_are_the_ledgers_after_events_it_never_saw(tmp_path):
    # A task that ends between the model's first read of the ledger and its subscription sends
    # its events to no one; the counts must still come right at the next delivery.
    from pools import temporary_pool
    with temporary_pool("unseen", dedicated=1) as pool:
        job = pool.job("unseen")
        job.add_task("t", "sleep 0.5")
        model = JobModel.from_job(job)                  # read while the task waits or runs
        assert model.counts["succeeded"] == 0
        assert job.wait(timeout=120, quiet=True).ok      # its events went by, unseen by the model
        model.apply([])                                  # the next delivery, of nothing about it
        assert {s: n for s, n in model.counts.items() if n} == {"succeeded": 1} == \
            {s: n for s, n in job.counts().items() if n}
