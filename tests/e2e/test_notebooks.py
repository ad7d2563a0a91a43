"""Every notebook in notebooks/ runs under papermill with no cloud account, and
its HTML conversion keeps each job's final counts and failures (the static
output a code host or an nbconvert report shows, where no widget runs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from batchnb.states import FAILED_TASK_STATES

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
BUDGET_SECONDS = 60      # each notebook must run well within a minute here


def test_there_are_the_example_notebooks():
    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart", "files", "elastic"} <= names, names


def _param(path: Path):
    # A notebook that starts Slurm runs on the xdist worker of the other Slurm tests (one cluster).
    services = json.loads(path.read_text()).get("metadata", {}).get("batchnb", {}).get("services", [])
    return pytest.param(path, id=path.stem, marks=[pytest.mark.xdist_group("slurm")] if "slurm" in services else [])


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_notebook_runs_and_its_html_keeps_the_final_counts(path, tmp_path, monkeypatch, request):
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from batchnb.engine.offline import jobs
    from batchnb.engine.ledger import Ledger
    from batchnb.ui.snapshot import counts_text

    # A notebook names the services it needs (metadata batchnb.services, e.g. ["slurm"]): their session
    # fixtures start them and put what a kernel needs (SLURM_CONF) in the environment it inherits.
    for service in nbformat.read(str(path), as_version=4).metadata.get("batchnb", {}).get("services", []):
        request.getfixturevalue(service)
    # The kernel inherits this environment: its own ledger, node folders and results.
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    # and its scratch folders (tempfile's) under pytest's tmp_path, which pytest prunes, not in /tmp
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    out = tmp_path / path.name
    start = time.monotonic()
    papermill.execute_notebook(str(path), str(out), cwd=str(tmp_path), kernel_name="python3",
                               progress_bar=False, execution_timeout=120)
    took = time.monotonic() - start
    assert took < BUDGET_SECONDS, f"{path.name} took {took:.0f}s"

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(out), as_version=4))
    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    ran = jobs(ledger)
    assert ran, f"{path.name} ran no job"
    for job in ran:
        counts = {s: n for s, n in job["counts"].items() if n}
        assert not {"pending", "active", "running"} & set(counts), (job["id"], counts)
        assert counts_text(counts) in body, f"{path.name}: no final counts of job {job['id']} ({counts}) in its HTML"
        for row in ledger.tasks(job["id"], states=FAILED_TASK_STATES):
            assert f"<code>{row['id']}</code>" in body, f"{path.name}: failed task {row['id']} not in its HTML"
        assert f"cost of job {job['id']}" in body, f"{path.name}: no cost of job {job['id']} in its HTML"
