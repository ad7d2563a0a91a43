"""Offline, the final state stays: a notebook run by papermill and converted by nbconvert
shows each view's final state (the pool's node list, the job's counts, the final cost)
where the widgets themselves are blank."""

from __future__ import annotations

import re
from pathlib import Path

from batchnb.ui.model import CostModel, JobModel, PoolModel
from batchnb.ui.final import static_html

REPO = Path(__file__).resolve().parents[2]


def test_static_html_of_each_view_model():
    from batchnb.cost import Cost
    from batchnb.engine.events import TasksAdded
    job = JobModel("j", created=0.0)
    job.apply([TasksAdded("j", 3, 0.0, {"succeeded": 3})])
    assert "3 tasks: 3 succeeded" in static_html(job)
    cost = CostModel("job j", job_id="j")
    cost.close(Cost(total=0.0123, by_group={"dedicated": 0.0123, "spot": 0.0}), hours={"node_hours": {}, "nodes_up": {}})
    assert "cost of job j" in static_html(cost) and "0.0123 USD" in static_html(cost)
    from batchnb.pool import NodeInfo  # noqa: F401  (the pool's node rows, as PoolModel takes them)
    assert "pool p" in static_html(PoolModel("p"))


def test_quickstart_html_keeps_the_final_cost_and_the_node_list(tmp_path, monkeypatch):
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from batchnb.cost import cost_from_ledger
    from batchnb.engine.ledger import Ledger

    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    out = tmp_path / "quickstart.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "quickstart.ipynb"), str(out), cwd=str(tmp_path),
                               kernel_name="python3", progress_bar=False, execution_timeout=120)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(out), as_version=4))
    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    final = cost_from_ledger(ledger, job_id="quickstart")
    costs = re.findall(r"<b>cost of job quickstart</b>: <b>([0-9.,]+) USD</b>", body)
    assert costs and float(costs[-1].replace(",", "")) == round(final.total, 4), (costs, final.total)
    pools = re.findall(r"<div class=[\"']batchnb-pool[\"'].*?</table></div>", body, re.S)
    assert pools and all(n in pools[-1] for n in ("dedicated-0", "dedicated-1")), pools
