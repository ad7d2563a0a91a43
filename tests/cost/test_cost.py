"""Tests of batchnb.cost: meter timelines, attribution, budgets, forecasts, price tables.

Prices are chosen so that every amount is an exact binary float
(3600 $/h = 1 $/s, 1800 $/h = 0.5 $/s): expectations are exact, no approx.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from batchnb.cost import BudgetGuard, Cost, CostMeter, Forecast, PriceRefreshError, PriceTable, forecast
from batchnb.errors import BatchError, SpecError

SIZE = "Standard_T2"
DED, SPOT = 3600.0, 1800.0  # 1 $/s and 0.5 $/s per node


@pytest.fixture
def meter() -> CostMeter:
    return CostMeter(PriceTable({SIZE: {"dedicated": DED, "spot": SPOT}}), SIZE)


# ---------------------------------------------------------------- the meter


def test_node_idle_task_released(meter):
    meter.node_requested("n1", "dedicated", t=0.0)
    meter.task_started("j", "t1", "n1", slots=1, t=10.0)
    meter.task_ended("j", "t1", "n1", t=30.0)
    meter.node_released("n1", t=100.0)
    c = meter.cost(now=200.0)
    assert c.total == 100.0 and c.busy == 20.0 and c.idle == 80.0
    assert c.by_group == {"dedicated": 100.0, "spot": 0.0}
    assert c.node_seconds == {"dedicated": 100.0, "spot": 0.0}
    assert c.by_job == {"j": 20.0} and c.by_task == {}
    assert meter.cost(now=200.0, job_id="j").by_task == {"t1": 20.0}
    assert c.rate_per_hour == 0.0 and c.currency == "USD" and c.at == 200.0


def test_cost_now_for_nodes_and_tasks_still_up(meter):
    meter.node_requested("n1", "dedicated", t=0.0)
    meter.task_started("j", "t1", "n1", slots=1, t=10.0)
    c = meter.cost(now=50.0)
    assert (c.total, c.busy, c.idle, c.rate_per_hour) == (50.0, 40.0, 10.0, DED)
    job = meter.cost(now=50.0, job_id="j")
    assert (job.total, job.rate_per_hour, job.by_task) == (40.0, DED, {"t1": 40.0})
    assert meter.cost(now=70.0).total == 70.0  # still billing
    light = meter.cost(now=50.0, job_id="j", detail=False)  # what a live view of a huge job asks
    assert (light.total, light.by_task, light.rows) == (40.0, {}, ())


def test_preempted_spot_node_stops_billing_and_retry_is_summed(meter):
    meter.node_requested("s1", "spot", t=0.0)
    meter.node_requested("d1", "dedicated", t=0.0)
    meter.task_started("j", "t1", "s1", slots=1, t=10.0)
    meter.node_released("s1", t=40.0)           # preemption: the attempt ends here
    meter.task_ended("j", "t1", "s1", t=60.0)   # late report of the same attempt: no-op
    meter.task_started("j", "t1", "d1", slots=1, t=50.0)
    meter.task_ended("j", "t1", "d1", t=70.0)
    job = meter.cost(now=100.0, job_id="j")
    assert job.by_task == {"t1": 35.0}          # 30 s * 0.5 $/s + 20 s * 1 $/s
    assert job.by_group == {"dedicated": 20.0, "spot": 15.0}
    assert job.node_seconds == {"dedicated": 20.0, "spot": 30.0}
    assert job.frame().loc[0, "attempts"] == 2
    pool = meter.cost(now=100.0)
    assert pool.by_group == {"dedicated": 100.0, "spot": 20.0}
    assert (pool.total, pool.busy, pool.idle) == (120.0, 35.0, 85.0)
    assert pool.rate_per_hour == DED            # only d1 is still up


def test_released_node_can_come_back(meter):
    meter.node_requested("s1", "spot", t=0.0)
    meter.node_released("s1", t=10.0)
    meter.node_released("s1", t=12.0)            # idempotent
    meter.node_requested("s1", "spot", t=20.0)
    assert meter.cost(now=30.0).node_seconds["spot"] == 20.0


def test_two_groups_with_different_prices(meter):
    meter.node_requested("d", "dedicated", t=0.0)
    meter.node_requested("s", "spot", t=0.0)
    meter.node_released("d", t=10.0)
    meter.node_released("s", t=10.0)
    c = meter.cost(now=10.0)
    assert c.by_group == {"dedicated": 10.0, "spot": 5.0} and c.total == 15.0


def test_slots_are_shared_at_the_node_price_per_slot(meter):
    meter.node_requested("n", "dedicated", t=0.0, slots=2)
    meter.task_started("j", "a", "n", slots=1, t=0.0)
    meter.task_started("j", "b", "n", slots=1, t=0.0)
    meter.task_ended("j", "a", "n", t=20.0)
    meter.task_ended("j", "b", "n", t=20.0)
    meter.task_started("j", "wide", "n", slots=2, t=20.0)
    meter.task_ended("j", "wide", "n", t=30.0)
    meter.node_released("n", t=40.0)
    c = meter.cost(now=40.0)
    assert meter.cost(now=40.0, job_id="j").by_task == {"a": 10.0, "b": 10.0, "wide": 10.0}
    assert (c.total, c.busy, c.idle) == (40.0, 30.0, 10.0)
    job = meter.cost(now=40.0, job_id="j")
    assert job.node_seconds["dedicated"] == 30.0   # 20 s * 1/2 * 2 tasks + 10 s * 2/2
    assert job.frame().set_index("task_id").loc["a", "slot_seconds"] == 20.0


def test_retry_on_same_node_sums_attempts(meter):
    meter.node_requested("n", "dedicated", t=0.0)
    meter.task_started("j", "t", "n", slots=1, t=0.0)
    meter.task_ended("j", "t", "n", t=10.0)
    meter.task_started("j", "t", "n", slots=1, t=20.0)
    meter.task_ended("j", "t", "n", t=25.0)
    row = meter.cost(now=30.0, job_id="j").frame().iloc[0]
    assert (row["attempts"], row["seconds"], row["cost"]) == (2, 15.0, 15.0)


def test_a_task_metered_leaves_no_object_of_its_own(meter):
    """What each task held is kept for job.cost()'s rows as numbers in columns: 20,000 tasks
    metered leave the garbage collector next to nothing more to walk (one object each before)."""
    import gc
    meter.node_requested("n1", "dedicated", t=0.0)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(20_000):
        meter.task_started("job", f"t{i}", "n1", slots=1, t=float(i))
        meter.task_ended("job", f"t{i}", "n1", t=i + 0.5)
    meter.task_started("job", "t7", "n1", slots=1, t=20_000.0)       # a second attempt, still running
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    c = meter.cost(now=20_001.0, job_id="job")
    assert len(c.by_task) == 20_000 and c.by_task["t3"] == 0.5 and c.by_task["t7"] == 1.5
    rows = {r["task_id"]: r for r in c.rows}
    assert rows["t7"]["attempts"] == 2 and type(rows["t7"]["attempts"]) is int and rows["t3"]["seconds"] == 0.5
    assert c.total == 20_000 * 0.5 + 1.0


def test_idle_is_total_minus_busy_exactly():
    meter = CostMeter(PriceTable({SIZE: {"dedicated": 0.192, "spot": 0.038}}), SIZE)
    meter.node_requested("n", "dedicated", t=0.1, slots=3)
    meter.node_requested("s", "spot", t=0.3, slots=3)
    for i, (start, end) in enumerate([(0.7, 13.3), (1.1, 2.9), (5.5, 77.7)]):
        meter.task_started("j", f"t{i}", "n" if i % 2 else "s", slots=1 + i % 2, t=start)
        meter.task_ended("j", f"t{i}", "n" if i % 2 else "s", t=end)
    c = meter.cost(now=123.4)
    assert c.idle == c.total - c.busy
    assert c.busy == sum(c.by_job.values())
    assert meter.cost(now=123.4, job_id="j").total == c.busy
    assert sum(meter.cost(now=123.4, job_id="j").by_task.values()) == pytest.approx(c.busy, rel=1e-15)


def test_per_job_sums_tags_and_grouping():
    meter = CostMeter(PriceTable({SIZE: {"dedicated": DED, "spot": SPOT}}), SIZE, tags={"team": "vision"})
    meter.node_requested("n", "dedicated", t=0.0, slots=2)
    meter.set_tags("a", {"project": "p1"})
    meter.set_tags("b", {"project": "p2", "team": "audio"})
    for job, task, start, end in [("a", "1", 0, 10), ("a", "2", 10, 30), ("b", "1", 0, 4), ("c", "1", 4, 8)]:
        meter.task_started(job, task, "n", slots=1, t=float(start))
        meter.task_ended(job, task, "n", t=float(end))
    c = meter.cost(now=40.0)
    assert c.by_job == {"a": 15.0, "b": 2.0, "c": 2.0}
    assert (c.total, c.busy, c.idle) == (40.0, 19.0, 21.0)
    assert c.by_tag("project") == {"p1": 15.0, "p2": 2.0, None: 2.0, "(idle)": 21.0}
    assert c.by_tag("team") == {"vision": 17.0, "audio": 2.0, "(idle)": 21.0}
    assert sum(c.by_tag("project").values()) == c.total
    frame = c.frame()
    assert list(frame.columns) == ["job_id", "tasks", "attempts", "seconds", "slot_seconds", "node_seconds",
                                   "dedicated", "spot", "cost", "project", "team"]
    assert frame.set_index("job_id").loc["a", "tasks"] == 2
    b = meter.cost(now=40.0, job_id="b")
    assert b.tags == {"team": "audio", "project": "p2"} and b.idle == 0.0
    assert list(b.frame().columns) == ["job_id", "task_id", "attempts", "seconds", "slot_seconds", "node_seconds",
                                       "dedicated", "spot", "cost", "project", "team"]
    assert b.by_tag("team") == {"audio": 2.0}


def test_running_projection(meter):
    meter.node_requested("n", "dedicated", t=0.0, slots=2)
    meter.task_started("j", "t", "n", slots=1, t=0.0)
    assert meter.running_projection("j", 30.0, now=10.0) == 10.0   # 20 s left at 0.5 $/s
    assert meter.running_projection("j", 5.0, now=10.0) == 0.0     # overdue: ends now
    assert meter.running_projection("j", None, now=10.0) == 0.0
    assert meter.running_projection("other", 30.0, now=10.0) == 0.0


def test_meter_prices_from_table():
    pt = PriceTable.load()
    assert CostMeter(pt, "Standard_D4s_v5", "eastus").hourly_price("dedicated") == 0.192
    assert CostMeter(vm_size="Standard_D4s_v5").hourly_price("spot") == pt.price("Standard_D4s_v5", "spot")
    free = CostMeter()
    assert free.hourly_price("spot") == 0.0
    free.node_requested("n", "dedicated", t=0.0)
    assert free.cost(now=99.0).total == 0.0
    with pytest.raises(SpecError, match="Standard_D4s_v9"):
        CostMeter(pt, "Standard_D4s_v9")


def test_meter_refuses_inconsistent_events(meter):
    with pytest.raises(SpecError, match="group"):
        meter.node_requested("n", "lowpri", t=0.0)
    with pytest.raises(SpecError, match="slots"):
        meter.node_requested("n", "dedicated", t=0.0, slots=0)
    meter.node_requested("n", "dedicated", t=0.0, slots=2)
    with pytest.raises(SpecError, match="already billed"):
        meter.node_requested("n", "dedicated", t=1.0)
    with pytest.raises(SpecError, match="not billed"):
        meter.task_started("j", "t", "ghost", slots=1, t=1.0)
    with pytest.raises(SpecError, match="never requested"):
        meter.node_released("ghost", t=1.0)
    meter.task_started("j", "t", "n", slots=2, t=1.0)
    with pytest.raises(SpecError, match="0 of 2 slots free"):
        meter.task_started("j", "u", "n", slots=1, t=1.0)
    with pytest.raises(SpecError, match="tag"):
        meter.set_tags("j", {"cost": "x"})


def test_meter_is_thread_safe(meter):
    meter.node_requested("n", "dedicated", t=0.0, slots=8)

    def work(k: int) -> None:
        for i in range(200):
            meter.task_started("j", f"{k}-{i}", "n", slots=1, t=float(i))
            meter.task_ended("j", f"{k}-{i}", "n", t=float(i) + 0.5)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert meter.cost(now=1000.0, job_id="j").total == 8 * 200 * 0.5 / 8


def test_cost_repr_and_html(meter):
    meter.node_requested("n", "dedicated", t=0.0)
    c = meter.cost(now=2.0)
    assert repr(c) == "Cost(total=2 USD, dedicated=2, spot=0, idle=2, rate=3600 USD/h)"
    assert "<table" in c._repr_html_() and "burn rate" in c._repr_html_()
    assert isinstance(c, Cost)


# ---------------------------------------------------------------- budget and forecast


def test_budget_guard_thresholds():
    guard = BudgetGuard(10.0, warn_fraction=0.75)
    assert guard.check(7.0) == "ok"
    assert guard.check(7.5) == "warn"
    assert guard.check(7.0, 3.0) == "warn"     # exactly the budget does not pass it
    assert guard.check(9.0, 1.5) == "stop"
    assert guard.check(10.5) == "stop"
    zero = BudgetGuard(0)
    assert zero.check(0.0) == "warn" and zero.check(0.0, 0.25) == "stop"


@pytest.mark.parametrize("kwargs,field", [({"budget": -1.0}, "budget"), ({"budget": float("nan")}, "budget"),
                                          ({"budget": "10"}, "budget"), ({"budget": 5, "warn_fraction": 0}, "warn"),
                                          ({"budget": 5, "warn_fraction": 1.5}, "warn")])
def test_budget_guard_validation(kwargs, field):
    with pytest.raises(SpecError, match=field):
        BudgetGuard(**kwargs)


def test_forecast_on_hand_data():
    f = forecast([50.0, 70.0], tasks_left=10, running=2, slots=4, rate_per_hour=720.0, spent=1.0, now=1000.0)
    # d = 60; W = 10*60 + 2*30 = 660 task-s; 660/4 = 165 s; 720 $/h * 165 s = 33 $
    assert f == Forecast(total_cost=34.0, finish_time=1165.0, remaining_seconds=165.0, mean_duration=60.0)
    only_running = forecast([60.0], tasks_left=0, running=3, slots=4, rate_per_hour=3600.0, spent=0.0, now=0.0)
    assert only_running.remaining_seconds == 30.0  # 90/4 = 22.5 s, but a running task has d/2 = 30 s left
    few = forecast([60.0], tasks_left=1, running=0, slots=8, rate_per_hour=3600.0, spent=0.0, now=0.0)
    assert few.remaining_seconds == 60.0 and few.total_cost == 60.0


def test_forecast_without_data():
    assert forecast([], 5, 1, 4, 1.0, 2.0, 0.0) == Forecast(None, None, None, None)
    assert forecast([10.0], 5, 0, 0, 1.0, 2.0, 0.0) == Forecast(None, None, None, 10.0)
    assert forecast([], 0, 0, 4, 1.0, 2.0, 7.0) == Forecast(2.0, 7.0, 0.0, None)
    with pytest.raises(SpecError, match="tasks_left"):
        forecast([1.0], -1, 0, 1, 1.0, 0.0, 0.0)


# ---------------------------------------------------------------- price tables


def test_snapshot_loads_with_date_and_source():
    pt = PriceTable.load()
    assert pt.date == "2024-06-01" and pt.currency == "USD"
    assert "hand-made snapshot" in pt.source and "Linux" in pt.source and "2024-06-01" in pt.source
    assert {"eastus", "westeurope"} <= set(pt.regions)
    assert len(pt.sizes("eastus")) >= 30
    assert pt.price("Standard_D4s_v5", "dedicated") == 0.192       # default region eastus
    assert pt.price("standard_d4s_v5", "spot", "eastus") == pt.price("D4s_v5", "spot", "EastUS")
    assert pt.price("Standard_D4s_v5", "dedicated", "westeurope") > 0.192
    for size in pt.sizes("westeurope"):
        assert 0 < pt.price(size, "dedicated", "westeurope") < 20
    with pytest.raises(SpecError, match="no spot price"):
        pt.price("Standard_B2s", "spot")


def test_unknown_size_names_it_and_close_names():
    with pytest.raises(SpecError) as info:
        PriceTable.load().price("Standard_D4s_v6", "dedicated")
    assert info.value.field == "vm_size" and "Standard_D4s_v6" in str(info.value)
    assert "close names: " in str(info.value) and "Standard_D4s_v5" in str(info.value)
    with pytest.raises(SpecError, match="group"):
        PriceTable.load().price("Standard_D4s_v5", "reserved")
    with pytest.raises(SpecError, match="known regions: eastus"):
        PriceTable.load().price("Standard_D4s_v5", "dedicated", "marsnorth")


def test_dict_override_any_region_and_region_specific():
    pt = PriceTable({"Standard_D4s_v5": {"dedicated": 0.5, "spot": 0.1},
                     "westeurope": {"Standard_D4s_v5": {"dedicated": 0.7}}})
    assert pt.price("Standard_D4s_v5", "dedicated") == 0.5
    assert pt.price("Standard_D4s_v5", "spot", "japaneast") == 0.1
    assert pt.price("Standard_D4s_v5", "dedicated", "westeurope") == 0.7
    assert pt.price("Standard_D4s_v5", "spot", "westeurope") == 0.1      # the group falls back to any region
    assert pt.date is None and pt.currency == "USD"


@pytest.mark.parametrize("prices,field", [
    (["Standard_D4s_v5"], "prices"),
    ({"Standard_D4s_v5": 0.19}, "prices['Standard_D4s_v5']"),
    ({"Standard_D4s_v5": {"dedicated": -1.0}}, "prices['Standard_D4s_v5']['dedicated']"),
    ({"Standard_D4s_v5": {"dedicated": "cheap"}}, "prices['Standard_D4s_v5']['dedicated']"),
    ({"Standard_D4s_v5": {"dedicated": 0.2, "lowpri": 0.01}}, "prices['Standard_D4s_v5']['lowpri']"),
    ({"eastus": {"Standard_D4s_v5": {"ded": 0.2}}}, "prices['Standard_D4s_v5']['ded']"),
])
def test_bad_price_dict_shape(prices, field):
    with pytest.raises(SpecError) as info:
        PriceTable(prices)
    assert info.value.field == field


def test_file_override_json_and_yaml(tmp_path):
    doc = {"date": "2025-01-02", "source": "our EA prices", "currency": "EUR",
           "prices": {"northeurope": {"Standard_E4s_v5": {"dedicated": 0.25, "spot": 0.05}}}}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    pt = PriceTable.load(tmp_path / "p.json")
    assert (pt.date, pt.source, pt.currency) == ("2025-01-02", "our EA prices", "EUR")
    assert pt.price("Standard_E4s_v5", "spot", "northeurope") == 0.05
    (tmp_path / "p.yaml").write_text("Standard_E4s_v5: {dedicated: 0.25}\n")  # bare prices, any region
    assert PriceTable.load(str(tmp_path / "p.yaml")).price("Standard_E4s_v5", "dedicated", "anywhere") == 0.25
    (tmp_path / "q.yml").write_text("date: 2025-01-02\ncurrency: USD\nprices:\n  Standard_E4s_v5: {dedicated: 0.5}\n")
    q = PriceTable.load(tmp_path / "q.yml")
    assert q.date == "2025-01-02" and q.price("Standard_E4s_v5", "dedicated") == 0.5
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not a valid price file"):
        PriceTable.load(tmp_path / "bad.json")
    with pytest.raises(SpecError, match="cannot read"):
        PriceTable.load(tmp_path / "missing.json")


# ---------------------------------------------------------------- refresh


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_refresh_offline_fails_fast_with_clear_error():
    pt = PriceTable.load()
    before = pt.price("Standard_D4s_v5", "dedicated")
    start = time.monotonic()
    try:
        pt.refresh("eastus", ["Standard_D4s_v5"], timeout=2.0)
    except PriceRefreshError as exc:  # offline (this machine): the table is untouched
        assert isinstance(exc, BatchError)
        assert "prices.azure.com" in str(exc) and "Prices are unchanged" in str(exc)
        assert pt.price("Standard_D4s_v5", "dedicated") == before and pt.date == "2024-06-01"
    assert time.monotonic() - start <= 3.0


def test_refresh_never_hangs_on_a_silent_server(no_proxy):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        start = time.monotonic()
        with pytest.raises(PriceRefreshError, match="Prices are unchanged"):
            PriceTable.load().refresh("eastus", timeout=1.0, url=f"http://127.0.0.1:{silent.getsockname()[1]}/p")
        assert time.monotonic() - start <= 2.0


def _item(sku, sku_name, price, product="Virtual Machines Dsv5 Series"):
    return {"armSkuName": sku, "skuName": sku_name, "meterName": sku_name, "productName": product,
            "retailPrice": price, "unitOfMeasure": "1 Hour", "armRegionName": "eastus",
            "type": "Consumption", "isPrimaryMeterRegion": True, "currencyCode": "USD"}


@pytest.fixture
def price_server(no_proxy):
    pages = {
        "/p": [_item("Standard_D4s_v5", "D4s v5", 0.2),
               _item("Standard_D4s_v5", "D4s v5", 0.4, "Virtual Machines Dsv5 Series Windows"),
               _item("Standard_D4s_v5", "D4s v5 Spot", 0.04),
               _item("Standard_D4s_v5", "D4s v5 Low Priority", 0.05)],
        "/p2": [_item("Standard_D8s_v5", "D8s v5", 0.4), _item("Standard_D8s_v5", "D8s v5 Spot", 0.08)],
    }
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            split = urlsplit(self.path)
            seen.append(self.path)
            base = f"http://127.0.0.1:{self.server.server_port}"
            body = {"Items": pages.get(split.path, []), "NextPageLink": base + "/p2" if split.path == "/p" else None}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def test_refresh_follows_pages_and_keeps_linux_prices(price_server):
    base, seen = price_server
    pt = PriceTable.load()
    other = pt.price("Standard_D4s_v5", "dedicated", "westeurope")
    assert pt.refresh("eastus", ["Standard_D4s_v5", "D8s_v5", "NV6ads_A10_v5"], timeout=5.0, url=base + "/p") is pt
    assert pt.price("Standard_D4s_v5", "dedicated", "eastus") == 0.2     # not Windows' 0.4
    assert pt.price("Standard_D4s_v5", "spot", "eastus") == 0.04         # not low priority's 0.05
    assert pt.price("Standard_D8s_v5", "spot", "eastus") == 0.08         # from the second page
    assert pt.price("Standard_D4s_v5", "dedicated", "westeurope") == other
    assert pt.date != "2024-06-01" and "retail prices API" in pt.source
    query = parse_qs(urlsplit(seen[0]).query)
    assert "armRegionName eq 'eastus'" in query["$filter"][0]
    assert "armSkuName eq 'Standard_D8s_v5' or armSkuName eq 'Standard_NV6ads_A10_v5'" in query["$filter"][0]
    assert query["currencyCode"] == ["'USD'"]
    assert len(seen) == 2


def test_refresh_bounded_pages_and_empty_answer(price_server):
    base, _ = price_server
    with pytest.raises(PriceRefreshError, match="more than 1 pages"):
        PriceTable.load().refresh("eastus", timeout=5.0, max_pages=1, url=base + "/p")
    with pytest.raises(PriceRefreshError, match="no Linux prices for region 'eastus'"):
        PriceTable.load().refresh("eastus", timeout=5.0, url=base + "/empty")
    with pytest.raises(SpecError, match="region"):
        PriceTable({"Standard_D4s_v5": {"dedicated": 1.0}}).refresh()
