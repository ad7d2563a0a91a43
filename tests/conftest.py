"""Shared fixtures: a temporary batchnb home (ledger, node folders), local pools,
the Azurite blob endpoint (from azurite_fixture) and the services of tests/services
(a single-machine Slurm)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from pools import temporary_pool

pytest_plugins = ["azurite_fixture", "services.slurm"]
pytest_plugins += ["services.gateway"]       # a dask-gateway server (tests/services/gateway.py)

# Keep compiled bytecode, though the environment may say not to (PYTHONDONTWRITEBYTECODE=1 here):
# without it every xdist worker re-runs pytest's assertion rewriting of the whole suite (over a
# minute of CPU on a busy 2-core machine), and every node, agent and script process the tests
# start compiles batchnb again. The files go to __pycache__ folders, which git ignores.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Every test run gets its own batchnb home, so no test ever touches ~/.batchnb.
_SESSION_HOME = tempfile.mkdtemp(prefix="batchnb-tests-")
os.environ["BATCHNB_HOME"] = _SESSION_HOME
os.environ["BATCHNB_TEST_SESSION"] = _SESSION_HOME    # for what a test keeps only if the session fails
# Dask workers are spawned processes: they must import test helpers from here.
os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])


@pytest.hookimpl(trylast=True)      # after the session's fixtures (pools, services) are torn down
def pytest_sessionfinish(session, exitstatus):
    """A session that passed removes its batchnb home (about 40 MB of ledgers and node folders a
    run); one that failed keeps it for a look (the report's header names it)."""
    if exitstatus == 0:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


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


# Which tests pytest-xdist (`make test`: -n 3 --dist loadgroup) keeps on one worker. The Slurm
# cluster is one per machine in effect (its node offers every CPU, and a second one would
# oversubscribe them); podman's store and its container list are machine-wide, and the container
# tests check that no bnb- container is left. A module or class fixture (a pool, a detached agent)
# is made once per worker that runs one of its tests, so those tests stay together as well.
# Everything else spreads test by test. Services on free ports (Azurite, the gateway server,
# Prometheus) are per worker and need no group.
_ONE_WORKER_SERVICES = ("podman_image", "slurm")


def _xdist_group(item) -> str | None:
    names = getattr(item, "fixturenames", ())
    for service in _ONE_WORKER_SERVICES:
        if service in names:
            return service
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    scopes = {d.scope for fixturedefs in defs.values() for d in fixturedefs}
    if scopes & {"module", "package"}:
        return item.nodeid.split("::")[0]
    if "class" in scopes:
        return item.nodeid.rsplit("::", 1)[0]
    return None


# tryfirst: xdist's own hook turns the marks into work units, and it would run before this one.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = _xdist_group(item)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group))


def pytest_report_header(config):
    return f"batchnb home: {_SESSION_HOME}; python {sys.version.split()[0]}"
