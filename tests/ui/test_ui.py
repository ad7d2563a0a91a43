"""The views' state after sequences of engine events (no browser), the static
HTML, the terminal progress, and that ``import batchnb`` loads no widget library."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pools import temporary_pool

from batchnb.engine.events import CostSample, EventBus, JobStateChanged, NodeStateChanged, PoolTargets, TasksAdded, TaskStateChanged
from batchnb.ui.model import CostModel, JobModel, PoolModel, node_hours, retries_of

REPO = Path(__file__).resolve().parents[2]


def ts(task, state, prev, t, node="dedicated-0", code=None, reason=None, attempt=1, job="j"):
    return TaskStateChanged(job, task, state, prev, t, attempt, node, code, reason)


def story():
    """Three tasks: a retried failure with stderr, a requeue, a success, a blocked dependent."""
    return [
        TasksAdded("j", 4, 0.0, {"active": 3, "pending": 1}),
        ts("a", "running", "active", 1.0),
        ts("b", "running", "active", 1.0, node="spot-0"),
        ts("b", "active", "running", 2.0, node="spot-0", reason="requeued: preempted"),
        ts("a", "active", "running", 2.0, code=3, reason="retry after exit code 3"),
        ts("a", "running", "active", 2.5, attempt=2),
        ts("a", "failed", "running", 3.0, code=3, reason="exit code 3", attempt=2),
        ts("d", "blocked", "pending", 3.0, node=None, reason="dependency a failed"),
        ts("b", "running", "active", 3.0, node="dedicated-1", attempt=2),
        ts("b", "succeeded", "running", 4.0, node="dedicated-1", code=0, attempt=2),
    ]


def test_job_model_folds_counts_retries_requeues_and_failures():
    tails = {"a": "line\n" * 30 + "Traceback: boom\n"}
    m = JobModel("j", created=0.0, stderr_tail=lambda tid: tails.get(tid, ""))
    m.apply(story())
    s = m.state(now=4.0)
    assert s["counts"] == {"pending": 0, "active": 1, "running": 0, "succeeded": 1, "failed": 1, "blocked": 1,
                           "cancelled": 0}
    assert (s["total"], s["done"], s["retries"], s["requeues"]) == (4, 3, 1, 1)
    fails = {f["task_id"]: f for f in s["failures"]}
    assert fails["a"]["exit_code"] == 3 and fails["a"]["node"] == "dedicated-0"
    assert fails["a"]["stderr"].endswith("Traceback: boom") and fails["a"]["stderr"].count("\n") == 19
    assert fails["d"]["state"] == "blocked" and "stderr" not in fails["d"]
    assert s["failures_total"] == 2
    # 3 tasks ended within the last 4 s of the job: 0.75/s; 1 left -> ETA 1.33 s
    assert s["throughput"] == pytest.approx(0.75)
    assert s["eta"] == pytest.approx(1 / 0.75)
    assert s["elapsed"] == pytest.approx(3.0)         # from its first start (1.0)
    # the job ends: elapsed stops, the rate becomes the whole run's
    m.apply([ts("c", "running", "active", 5.0), ts("c", "succeeded", "running", 6.0, code=0),
             JobStateChanged("j", "completed", 6.0, "all_tasks_complete")])
    s = m.state(now=100.0)
    assert s["elapsed"] == pytest.approx(5.0) and s["eta"] is None
    assert s["throughput"] == pytest.approx(4 / 5.0, abs=1e-3)
    assert (s["job_state"], s["reason"]) == ("completed", "all_tasks_complete")


def test_job_model_ignores_other_jobs_and_keeps_a_bounded_failure_list():
    m = JobModel("j", created=0.0)
    m.apply([TasksAdded("other", 5, 0.0, {"active": 5}), TasksAdded("j", 80, 0.0, {"active": 80})])
    m.apply([ts(f"t{i}", "failed", "active", 1.0, code=1) for i in range(80)])
    s = m.state(now=1.0)
    assert s["total"] == 80 and s["counts"]["failed"] == 80
    assert len(s["failures"]) == 50 and s["failures_total"] == 80
    # a replaced task that runs again is no longer listed as failed
    m.apply([ts("t0", "active", "failed", 2.0)])
    assert m.state(now=2.0)["failures_total"] == 79


def test_retries_from_ledger_rows_match_the_event_count():
    # task a of story(): 2 attempts, 0 requeues, failed -> 1 retry; b: 2 attempts, 1 requeue, succeeded -> 0
    assert retries_of("failed", 2, 0) == 1
    assert retries_of("succeeded", 2, 1) == 0
    assert retries_of("active", 2, 0) == 2        # waiting out its second retry's delay
    assert retries_of("blocked", 0, 0) == 0


def test_job_view_syncs_what_the_events_say_throttled():
    from batchnb.ui.views import JobView
    bus = EventBus()
    view = JobView(model=JobModel("j", created=time.time()), bus=bus)
    assert view._sub.interval == pytest.approx(0.2)          # at most five redraws a second
    syncs = []
    view.observe(lambda ch: syncs.append(time.monotonic()), names=["counts"])
    bus.publish(TasksAdded("j", 400, time.time(), {"active": 400}))
    start = time.monotonic()
    for i in range(400):                                     # one event every ~2.5 ms for about a second
        bus.publish(ts(f"t{i}", "succeeded", "active", time.time(), code=0))
        time.sleep(0.0025)
    took = time.monotonic() - start
    view.flush()
    assert view.counts["succeeded"] == 400 and view.done == 400 and view.total == 400
    assert len(syncs) <= took / 0.2 + 3, (len(syncs), took)
    bus.publish(JobStateChanged("j", "completed", time.time(), "all_tasks_complete"))
    view.flush()
    assert view.job_state == "completed" and view._sub.closed
    view.close()


def test_pool_model_grid_targets_and_running_tasks():
    m = PoolModel("p", dedicated=2, spot=1)
    m.apply([NodeStateChanged("p", "dedicated-0", "dedicated", "idle", 0.0),
             NodeStateChanged("p", "dedicated-1", "dedicated", "starting", 0.0),
             NodeStateChanged("p", "spot-0", "spot", "idle", 0.0),
             NodeStateChanged("other", "x-0", "dedicated", "idle", 0.0),
             ts("a", "running", "active", 1.0, node="dedicated-0"),
             ts("b", "running", "active", 1.0, node="spot-0"),
             ts("c", "running", "active", 1.0, node="spot-0", job="k"),
             NodeStateChanged("p", "spot-0", "spot", "preempted", 2.0, "preempted"),
             ts("b", "active", "running", 2.0, node="spot-0", reason="requeued: preempted"),
             PoolTargets("p", 3.0, 3, 0, "autoscale")])
    s = m.state()
    nodes = {n["id"]: n for n in s["nodes"]}
    assert list(nodes) == ["dedicated-0", "dedicated-1", "spot-0"]
    assert nodes["dedicated-0"]["running"] == ["a"] and nodes["dedicated-0"]["used"] == 1
    assert nodes["spot-0"]["state"] == "preempted" and nodes["spot-0"]["running"] == []
    assert nodes["spot-0"]["reason"] == "preempted"
    assert s["targets"] == {"dedicated": 3, "spot": 0} and s["target_reason"] == "autoscale"
    assert s["current"] == {"dedicated": 2, "spot": 0}
    m.apply([ts("a", "succeeded", "running", 4.0, node="dedicated-0", code=0)])
    assert m.state()["nodes"][0]["running"] == []


def test_node_hours_and_cost_rates_per_group():
    rows = [{"node_id": "dedicated-0", "grp": "dedicated", "state": "idle", "time": 0.0},
            {"node_id": "spot-0", "grp": "spot", "state": "starting", "time": 0.0},
            {"node_id": "spot-0", "grp": "spot", "state": "preempted", "time": 900.0},
            {"node_id": "spot-0", "grp": "spot", "state": "idle", "time": 2700.0}]
    out = node_hours(rows, now=3600.0)
    assert out["node_hours"] == {"dedicated": 1.0, "spot": 0.5}
    assert out["nodes_up"] == {"dedicated": 1, "spot": 1}
    assert node_hours(rows, now=3600.0, since=1800.0)["node_hours"] == {"dedicated": 0.5, "spot": 0.25}

    from batchnb.cost import Cost
    m = CostModel("job j", job_id="j", budget=10.0)
    m.update(hours=out, now=0.0)
    s = m.state()
    assert not s["metered"] and s["groups"]["spot"]["node_hours"] == 0.5 and s["groups"]["spot"]["nodes_up"] == 1
    m.update(cost=Cost(total=1.0, by_group={"dedicated": 0.75, "spot": 0.25}, rate_per_hour=3.6,
                       node_seconds={"dedicated": 3600.0, "spot": 1800.0}), now=100.0)
    m.update(cost=Cost(total=1.2, by_group={"dedicated": 0.85, "spot": 0.35}, rate_per_hour=3.6,
                       node_seconds={"dedicated": 3700.0, "spot": 1900.0}), now=200.0)
    s = m.state()
    assert s["metered"] and s["total"] == 1.2 and s["budget"] == 10.0
    # the header's 3.6/h, split by what each group spent since the last reading (0.1 and 0.1)
    assert s["groups"]["dedicated"]["rate"] == pytest.approx(1.8) == s["groups"]["spot"]["rate"]
    assert s["groups"]["spot"]["node_hours"] == pytest.approx(1900 / 3600)
    m.apply([CostSample("p", 201.0, 1.3, 4.0, job_id="j"), CostSample("p", 201.0, 9.0, 9.0)])   # the pool's
    assert (m.state()["total"], m.state()["rate"]) == (1.3, 4.0)


def test_static_html_keeps_counts_failures_and_cost():
    from batchnb.result import JobResult
    from batchnb.cost import Cost
    r = JobResult("j<1>", "completed", "all_tasks_complete", {"succeeded": 20, "failed": 1, "blocked": 1},
                  [{"task_id": "bad", "state": "failed", "exit_code": 3, "node": "dedicated-1",
                    "category": "exit_code", "message": "exit code 3"}], 2.5,
                  Cost(total=0.5, by_group={"dedicated": 0.5, "spot": 0.0}))
    html = r._repr_html_()
    assert "22 tasks: 20 succeeded, 1 failed, 1 blocked" in html
    assert json.loads(html.split("data-counts='")[1].split("'")[0].replace("&quot;", '"')) == \
        {"blocked": 1, "failed": 1, "succeeded": 20}
    assert "<code>bad</code>" in html and ">3</td>" in html and "dedicated-1" in html and "stderr" not in html
    assert "j&lt;1&gt;" in html and "cost of pool" in html


def test_asset_prefers_the_wheel_then_the_repo(tmp_path):
    from batchnb.ui.views import asset
    assert asset("job.js") == REPO / "widgets" / "job.js"
    pkg = tmp_path / "site" / "batchnb"
    (pkg / "_static").mkdir(parents=True)
    (pkg / "_static" / "job.js").write_text("export default {}")
    assert asset("job.js", package=pkg) == pkg / "_static" / "job.js"
    with pytest.raises(FileNotFoundError, match="reinstall"):
        asset("nope.js", package=pkg)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"widgets" = "batchnb/_static"' in pyproject


WIDGETS = ("job.js", "pool.js", "cost.js")
SHARED = ("h", "chip", "meter", "coalesced", "drawOnChanges")       # what widgets/_dom.js exports


def shipped(name: str) -> str:
    """The module text a view hands anywidget (``_esm``), ``widgets/_dom.js`` inlined."""
    from batchnb.ui import views
    return {"job.js": views.JobView, "pool.js": views.PoolView, "cost.js": views.CostView}[name]._esm


@pytest.mark.parametrize("name", WIDGETS)
def test_front_end_modules_parse_and_import_nothing_remote(name, tmp_path):
    on_disk = (REPO / "widgets" / name).read_text()
    imports = [line for line in on_disk.splitlines() if line.startswith("import ")]
    assert imports and all(line.endswith(' from "./_dom.js";') for line in imports), imports
    text = shipped(name)
    assert "export default" in text and "http" not in text and "import " not in text
    node = shutil.which("node")
    assert node, "node is part of this machine's toolchain"
    for i, module in enumerate((text, (REPO / "widgets" / "_dom.js").read_text())):
        (tmp_path / f"m{i}.mjs").write_text(module)
        subprocess.run([node, "--check", str(tmp_path / f"m{i}.mjs")], check=True, capture_output=True, timeout=30)


@pytest.mark.parametrize("name", WIDGETS)
def test_shipped_modules_inline_the_shared_helpers_once(name):
    import re
    text = shipped(name)
    assert "./_dom.js\"" not in text.replace('import("./_dom.js")', "")     # only JSDoc type references stay
    assert not re.search(r"^\s*(import|export)\b(?! default)", text, re.M)
    for helper in SHARED:
        assert len(re.findall(rf"^function {helper}\(", text, re.M)) == 1, helper
    # the widget no longer defines them itself, and the disk file imports what it uses
    on_disk = (REPO / "widgets" / name).read_text()
    assert not re.search(rf"^function ({'|'.join(SHARED)})\(", on_disk, re.M)
    from batchnb.ui import views
    assert views._module(name) is text, "inlined once per process"
    assert set(re.findall(r"^export (?:function|const) (\w+)", (REPO / "widgets" / "_dom.js").read_text(), re.M)) \
        == set(SHARED)


def test_a_widget_importing_what_dom_js_lacks_fails_at_load(tmp_path, monkeypatch):
    from batchnb.ui import views
    (tmp_path / "x.js").write_text('import { h, nope } from "./_dom.js";\nexport default {};\n')
    monkeypatch.setattr(views, "_text", lambda n: (tmp_path / n).read_text() if n == "x.js" else
                        (REPO / "widgets" / n).read_text())
    with pytest.raises(ValueError, match="nope"):
        views._module.__wrapped__("x.js")


@pytest.mark.parametrize("form", ["modules", "shipped"])
def test_front_ends_keep_their_controls_and_draw_once_per_sync(form, tmp_path):
    # pool.js keeps its <input> (typed text, focus) across redraws; job.js, cost.js and
    # pool.js draw once per sync of many traits, in the next frame (or turn without frames):
    # as files importing ./_dom.js, and as the texts the views ship, with no _dom.js beside them.
    for name in WIDGETS:
        if form == "modules":
            shutil.copy(REPO / "widgets" / name, tmp_path / name)
        else:
            (tmp_path / name).write_text(shipped(name))
    if form == "modules":
        shutil.copy(REPO / "widgets" / "_dom.js", tmp_path / "_dom.js")
    (tmp_path / "package.json").write_text('{"type": "module"}')
    out = subprocess.run([shutil.which("node"), str(REPO / "tests" / "widgets_under_node.mjs"), str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_pool_model_drops_nodes_the_pool_no_longer_lists():
    from batchnb.pool import NodeInfo
    m = PoolModel("p", dedicated=2)
    m.update_nodes([NodeInfo("dedicated-0", "dedicated", "idle", (), 1, 0),
                    NodeInfo("dedicated-1", "dedicated", "running", ("a",), 1, 1)])
    m.apply([NodeStateChanged("p", "dedicated-1", "dedicated", "offline", 1.0, "removed")])
    assert [n["id"] for n in m.state()["nodes"]] == ["dedicated-0", "dedicated-1"]
    m.update_nodes([NodeInfo("dedicated-0", "dedicated", "idle", (), 1, 0)])     # resized 2 -> 1
    assert [n["id"] for n in m.state()["nodes"]] == ["dedicated-0"] and not m.where


def test_import_batchnb_loads_no_widget_library():
    code = ("import sys, batchnb, batchnb.ui, batchnb.ui.progress, batchnb.ui.snapshot, batchnb.ui.model\n"
            "bad = [m for m in ('ipywidgets', 'anywidget', 'IPython') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- on a real local pool -------------------------------------------------------------

@pytest.fixture(scope="module")
def pool1():
    with temporary_pool("ui", dedicated=1) as pool:
        yield pool


def test_views_follow_a_real_job(pool1, unique):
    from batchnb.ui.views import CostView, JobView, PoolView
    job = pool1.job(unique, max_task_retries=1)
    jv, pv, cv = job.view(), pool1.view(), pool1.view("cost", job=job)
    job.add_tasks([{"id": f"t{i}", "command": "true"} for i in range(6)])
    job.add_task("bad", "echo to-stderr >&2; exit 7")
    job.add_task("after", "true", depends_on=["bad"])
    result = job.wait(timeout=60, quiet=True)
    for v in (jv, pv, cv):
        v.flush()
    assert isinstance(jv, JobView) and isinstance(pv, PoolView) and isinstance(cv, CostView)
    assert {k: v for k, v in jv.counts.items() if v} == result.counts == {"succeeded": 6, "failed": 1, "blocked": 1}
    assert jv.retries == 1 and jv.requeues == 0 and jv.done == jv.total == 8
    bad = next(f for f in jv.failures if f["task_id"] == "bad")
    assert bad["exit_code"] == 7 and bad["node"] == "dedicated-0" and bad["stderr"] == "to-stderr"
    html = result._repr_html_()       # the static record keeps the stderr tail too, from the pool's ledger
    assert "8 tasks: 6 succeeded, 1 failed, 1 blocked" in html and "to-stderr" in html
    # a view made after the fact reads the same from the ledger
    late = JobModel.from_job(job).state()
    assert (late["counts"], late["retries"], late["failures_total"]) == (jv.counts, 1, 2)
    assert [n["id"] for n in pv.nodes] == ["dedicated-0"] and pv.nodes[0]["running"] == []
    assert cv.scope == f"job {unique}" and ("dedicated" in cv.groups)
    for v in (jv, pv, cv):
        v.close()


def test_pool_view_scale_controls_resize_the_pool(pool1):
    from batchnb.ui.views import PoolView
    view = PoolView(pool1)
    two = threading.Event()
    view.observe(lambda ch: two.set() if ch["new"].get("dedicated") == 2 else None, names=["current"])
    view._on_msg(view, {"type": "resize", "group": "dedicated", "count": 2}, [])
    assert two.wait(60), view.current
    assert view.targets["dedicated"] == 2 and view.error == ""
    view._on_msg(view, {"type": "resize", "group": "gpu", "count": 2}, [])
    assert "gpu" in view.error
    view.resize("dedicated", -1)
    assert "dedicated" in view.error and "-1" in view.error
    view.resize("dedicated", 1)
    view.close()


def test_terminal_progress_summary_quiet_and_logging(pool1, unique, capsys, caplog):
    job = pool1.job(unique)
    job.add_tasks([{"id": f"t{i}", "command": "true"} for i in range(3)])
    with caplog.at_level(logging.INFO, logger="batchnb"):
        job.wait(timeout=60)
    err = capsys.readouterr().err
    assert "3/3" in err and f"job {unique}: " in err and "3 succeeded" in err
    assert any("3 succeeded" in r.getMessage() for r in caplog.records if r.name == "batchnb")
    job.add_task("more", "true")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="batchnb"):
        job.wait(timeout=60, quiet=True)
    assert capsys.readouterr().err == ""
    assert any("4 succeeded" in r.getMessage() for r in caplog.records)


def test_bundles_outside_a_kernel_are_static_html(pool1, unique):
    job = pool1.job(unique)
    job.add_task("t", "true")
    job.wait(timeout=60, quiet=True)
    jb, pb = job._repr_mimebundle_(), pool1._repr_mimebundle_()
    assert set(jb) == {"text/plain", "text/html"} and "1 task: 1 succeeded" in jb["text/html"]
    assert set(pb) == {"text/plain", "text/html"} and "dedicated-0" in pb["text/html"]


def test_a_default_pool_shows_its_real_targets_and_drops_removed_nodes():
    import os

    from batchnb.ui.snapshot import pool_html
    from batchnb.ui.views import PoolView
    cores = os.cpu_count() or 1
    with temporary_pool("uidefault") as pool:      # no node count: one node per core
        assert pool.spec.dedicated is None
        view = PoolView(pool)
        view.metrics_every = 0.2
        assert view.targets == {"dedicated": cores, "spot": 0}
        # so "+" asks for one node more, not for spec.dedicated (None -> 0) + 1
        assert f"dedicated {len(pool.nodes())} up / target {cores}" in pool_html(PoolModel.from_pool(pool).state())
        gone = threading.Event()
        view.observe(lambda ch: gone.set() if len(ch["new"]) == 1 else None, names=["nodes"])
        view.resize("dedicated", 1)
        # removed nodes leave the view by the late reading, with no events after the last
        assert gone.wait(30), [(n["id"], n["state"]) for n in view.nodes]
        assert [n["id"] for n in view.nodes] == [n.id for n in pool.nodes()]
        assert view.targets["dedicated"] == 1 and view.error == ""
        view.close()


def test_pool_view_reads_nodes_at_most_every_metrics_every(pool1):
    from batchnb.ui.views import PoolView
    bus = EventBus()
    view = PoolView(pool1, bus=bus)
    view.metrics_every = 0.4
    calls, real = [], pool1.nodes
    pool1.nodes = lambda: calls.append(time.monotonic()) or real()       # a spy on the real pool
    try:
        start = time.monotonic()
        while time.monotonic() - start < 1.2:
            bus.publish(NodeStateChanged(pool1.name, "dedicated-0", "dedicated", "idle", time.time()))
            time.sleep(0.02)
        last = time.monotonic()
        view.flush()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not calls or calls[-1] < last):
            time.sleep(0.05)
    finally:
        del pool1.nodes
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert calls and calls[-1] >= last, "one late reading follows the last events"
    assert len(calls) <= 1.2 / 0.4 + 2 and all(g >= 0.4 - 0.02 for g in gaps), gaps
    view.close()


def test_views_end_their_subscriptions_when_closed_from_either_side(pool1):
    import gc
    import weakref

    from batchnb.ui import live_pool_view
    from batchnb.ui.views import CostView, PoolView
    bus = EventBus()
    pv, cv = PoolView(pool1, bus=bus), CostView(pool1, bus=bus)
    pv.close()
    assert pv._sub.closed and pv._late is None
    # the front end closing the comm: a comm_close message to the kernel's comm manager
    from comm import get_comm_manager
    get_comm_manager().comm_close(None, None, {"content": {"comm_id": cv.comm.comm_id, "data": {}}})
    assert cv._sub.closed and cv.comm is None and not bus._subs
    gone = weakref.ref(cv)
    del cv
    gc.collect()
    assert gone() is None, "a closed view is garbage: nothing holds it"
    # a pool shown again shows its one open view, not one more subscriber
    first = live_pool_view(pool1)
    assert live_pool_view(pool1) is first
    first.close()
    second = live_pool_view(pool1)
    assert second is not first and not second._sub.closed
    second.close()
