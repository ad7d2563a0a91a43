"""Shared fixtures: a temporary batchnb home (ledger, node folders), local pools,
the Azurite blob endpoint (from azurite_fixture) and the services of tests/services
(a single-machine Slurm)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from pools import temporary_pool

pytest_plugins = ["azurite_fixture", "services.slurm"]
pytest_plugins += ["services.gateway"]       # a dask-gateway server (tests/services/gateway.py)

# Every test run gets its own batchnb home, so no test ever touches ~/.batchnb.
_SESSION_HOME = tempfile.mkdtemp(prefix="batchnb-tests-")
os.environ["BATCHNB_HOME"] = _SESSION_HOME
# Dask workers are spawned processes: they must import test helpers from here.
os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh batchnb home for one test."""
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    import batchnb.engine.ledger
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    return tmp_path / "home"


@pytest.fixture
def ledger(home):
    from batchnb.engine.ledger import Ledger
    return Ledger(home / "ledger.sqlite")


@pytest.fixture(scope="module")
def pool2():
    """A local pool of two one-slot nodes, shared by a module's tests (each test uses its own job ids)."""
    with temporary_pool("t2", dedicated=2) as pool:
        yield pool


@pytest.fixture
def unique(request):
    """A job id unique to this test."""
    name = request.node.name.replace("[", "-").replace("]", "")
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:60]


def pytest_report_header(config):
    return f"batchnb home: {_SESSION_HOME}; python {sys.version.split()[0]}"
