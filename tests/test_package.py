"""The public surface: __all__ is honest, import is light."""

from __future__ import annotations

import subprocess
import sys

import batchnb as bnb


def test_all_names_resolve():
    for name in bnb.__all__:
        assert getattr(bnb, name) is not None, name
    public = {n for n in dir(bnb) if not n.startswith("_")}
    assert set(bnb.__all__) <= public


def test_design_api_names_exist():
    for name in ("Pool", "Job", "Task", "TaskSpec", "JobSpec", "PoolSpec", "Retry", "ExitOptions", "StartTask",
                 "AppPackage", "TaskIdRange", "PriceTable", "JobResult", "jobs", "SpecError", "BatchError",
                 "FormulaError"):
        assert name in bnb.__all__


def test_import_loads_neither_widgets_nor_distributed():
    code = ("import sys, batchnb; bad = [m for m in ('ipywidgets', 'anywidget', 'distributed') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_errors_form_one_tree():
    for name in ("SpecError", "FormulaError", "LedgerError", "LeaseHeld", "BackendError", "MissingDependency",
                 "StagingError", "TaskFailed", "JobTerminated", "WaitTimeout"):
        assert issubclass(getattr(bnb, name), bnb.BatchError)
    assert issubclass(bnb.WaitTimeout, TimeoutError) and issubclass(bnb.MissingDependency, ImportError)
