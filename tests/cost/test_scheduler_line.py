"""The scheduler VM's line of a pool's cost (issue 12, point 6): pure, no cluster."""

from __future__ import annotations

import pytest

from batchnb.cost import CostMeter, PriceTable


def test_the_scheduler_vm_is_a_line_of_the_pools_cost_and_of_no_job():
    meter = CostMeter(PriceTable({"Standard_X": {"dedicated": 3600.0}}), "Standard_X", tags={"team": "v"})
    meter.scheduler_requested(t=0.0, price_per_hour=7200.0)          # 2 a second, from the pool's start
    meter.node_requested("n1", "dedicated", t=10.0)                  # 1 a second
    meter.task_started("j", "t", "n1", slots=1, t=20.0)
    meter.task_ended("j", "t", "n1", t=30.0)
    c = meter.cost(now=100.0)
    assert c.by_group == {"dedicated": 90.0, "spot": 0.0, "scheduler": 200.0}
    assert c.node_seconds["scheduler"] == 100.0
    assert (c.total, c.busy, c.idle) == (290.0, 10.0, 80.0)          # busy + idle + scheduler == total
    assert c.rate_per_hour == 3600.0 + 7200.0
    assert c.by_tag("team") == {"v": 10.0, "(idle)": 80.0, "(scheduler)": 200.0}
    assert "scheduler=200" in repr(c) and "scheduler VM" in c._repr_html_()
    assert "scheduler" not in meter.cost(now=100.0, job_id="j").by_group
    meter.scheduler_released(t=150.0)
    meter.node_released("n1", t=150.0)
    later = meter.cost(now=500.0)
    assert later.by_group["scheduler"] == pytest.approx(300.0) and later.rate_per_hour == 0.0
    # A pool without a scheduler VM of its own (a local one) has no such line.
    meter = CostMeter(PriceTable({"Standard_X": {"dedicated": 3600.0}}), "Standard_X")
    meter.node_requested("n1", "dedicated", t=0.0)
    c = meter.cost(now=10.0)
    assert "scheduler" not in c.by_group and c.total == c.busy + c.idle == 10.0
