"""The backend registry, and a conformance suite every backend inherits (as fsspec's tests/abstract).

A backend's test class gives a class-scoped ``pool`` of one dedicated and one
spot node of one slot each and says what the backend can do; the suite checks
the contract of ``batchnb/backends/base.py`` through a real pool: node names and
groups, a job on every node, scaling, preemption with requeue, option checks.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask
import pytest

import batchnb as bnb
from waiting import wait_for
from batchnb import backends
from batchnb.backends import get_backend, register
from batchnb.backends.address import AddressBackend
from batchnb.backends.azure import AzureBackend
from batchnb.backends.local import LocalBackend
from batchnb.errors import BackendError, MissingDependency, SpecError
from batchnb.engine.ledger import Ledger
from batchnb.spec import PoolSpec

from azure_standin import LocalVMHost, RecordingAzureSDK
from test_azure_backend import azure_options


def states(pool) -> dict:
    return {n.id: n.state for n in pool.nodes()}


# -- the registry -------------------------------------------------------------------
def test_registry_knows_local_address_and_azure_lazily():
    assert get_backend("local") is LocalBackend
    assert get_backend("address") is AddressBackend
    assert get_backend("azure") is AzureBackend
    with pytest.raises(SpecError, match="known backends are .*address.*azure.*local") as err:
        get_backend("slurm")
    assert err.value.field == "backend"


def test_missing_extra_names_what_to_install(monkeypatch):
    monkeypatch.setitem(backends.registry, "broken", {"class": "no_such_module_xyz.Cls", "err": "pip install xyz"})
    with pytest.raises(MissingDependency, match="pip install xyz"):
        get_backend("broken")


def test_third_party_backend_from_an_entry_point(monkeypatch, tmp_path):
    # a real distribution on sys.path that declares a backend under the entry-point group
    dist = tmp_path / "batchnb_mine-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: batchnb-mine\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[batchnb.backends]\nmine = batchnb.backends.local:LocalBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(backends.registry, "mine", raising=False)
    assert get_backend("mine") is LocalBackend
    backends.registry.pop("mine", None)


def test_register_a_class(monkeypatch):
    monkeypatch.delitem(backends.registry, "mine2", raising=False)
    register("mine2", LocalBackend)
    try:
        assert get_backend("mine2") is LocalBackend
    finally:
        backends.registry.pop("mine2", None)


# -- the conformance suite ------------------------------------------------------------
class BackendConformance:
    """What every backend must do. Subclasses: a class-scoped ``pool`` fixture, ``name``, ``can_*``, ``bad_options``."""

    name = ""
    can_scale = True
    can_preempt = True
    bad_options: dict = {"no_such_option": 1}
    startup = 30.0

    @pytest.fixture
    def up(self, pool):
        wait_for(lambda: states(pool) == {"dedicated-0": "idle", "spot-0": "idle"}, self.startup,
                 "dedicated-0 and spot-0 idle")
        return pool

    def test_registry_gives_this_backend(self, up):
        assert get_backend(self.name) is type(up._backend)
        assert up._backend.can_scale is self.can_scale and up._backend.can_preempt is self.can_preempt

    def test_nodes_are_named_by_id_with_their_group(self, up):
        nodes = {n.id: n for n in up.nodes()}
        assert {i: (n.group, n.slots) for i, n in nodes.items()} == {"dedicated-0": ("dedicated", 1),
                                                                     "spot-0": ("spot", 1)}
        assert sorted(w.name for w in up._engine.workers()) == ["dedicated-0", "spot-0"]

    def test_a_job_runs_on_every_node(self, up, unique):
        job = up.job(unique, max_task_retries=0)
        tasks = [job.add_task(f"t{i}", "sleep 0.2; echo $AZ_BATCH_NODE_ID") for i in range(4)]
        assert job.wait(timeout=60).ok
        ran = {t.stdout().strip() for t in tasks}
        assert ran == {"dedicated-0", "spot-0"} == {t.node for t in job.tasks()}

    def test_scale_up_and_down(self, up):
        if not self.can_scale:
            with pytest.raises(BackendError, match="cannot scale"):
                up.resize(dedicated=2)
            return
        up.resize(dedicated=2)
        wait_for(lambda: states(up).get("dedicated-1") == "idle", self.startup, "dedicated-1 to join")
        up.resize(dedicated=1)
        wait_for(lambda: "dedicated-1" not in states(up), self.startup, "dedicated-1 to leave")
        assert set(states(up)) == {"dedicated-0", "spot-0"}

    def test_preempt_requeues_and_the_node_comes_back(self, up, unique):
        if not self.can_preempt:
            with pytest.raises(BackendError, match="cannot preempt"):
                up.preempt("spot-0")
            return
        job = up.job(unique, max_task_retries=0)
        for i in range(2):
            job.add_task(f"t{i}", "sleep 1")
        wait_for(lambda: states(up)["spot-0"] == "running", 20, "spot-0 running")
        up.preempt("spot-0")
        assert states(up)["spot-0"] == "preempted"
        assert job.wait(timeout=60).ok
        assert sum(t.requeues for t in job.tasks()) == 1
        wait_for(lambda: states(up).get("spot-0") == "idle", self.startup, "spot-0 back")

    def test_unknown_options_are_refused(self):
        with pytest.raises((SpecError, BackendError), match=next(iter(self.bad_options))):
            get_backend(self.name)(PoolSpec("x", backend=self.name), **self.bad_options)


@pytest.fixture(scope="class")
def fast_return():
    with dask.config.set({"batchnb.preempt-return-after": 0.3}):
        yield


class TestLocalBackend(BackendConformance):
    name = "local"

    @pytest.fixture(scope="class")
    def pool(self, fast_return):
        with tempfile.TemporaryDirectory() as tmp:
            with bnb.Pool("conf-local", dedicated=1, spot=1, ledger=Ledger(Path(tmp) / "l.sqlite")) as pool:
                yield pool


class TestAddressBackend(BackendConformance):
    name = "address"
    can_scale = False
    can_preempt = False

    @pytest.fixture(scope="class")
    def pool(self, fast_return):
        from distributed import LocalCluster
        cluster = LocalCluster(n_workers=0, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                               resources={"slots": 1})
        for name in ("dedicated-0", "spot-0"):         # workers named as nodes: the address backend's convention
            cluster.worker_spec[name] = dict(cluster.new_spec)
        cluster.sync(cluster._correct_state)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                with bnb.Pool("conf-addr", backend="address", address=cluster.scheduler_address,
                              ledger=Ledger(Path(tmp) / "l.sqlite")) as pool:
                    yield pool
        finally:
            cluster.close()

    def test_address_is_checked(self):
        with pytest.raises(SpecError) as err:
            AddressBackend(PoolSpec("x", backend="address"), address="localhost:8786")
        assert err.value.field == "address"


class TestAzureBackend(BackendConformance):
    """Against RecordingAzureSDK, whose LocalVMHost boots each requested VM as local processes."""

    name = "azure"
    bad_options = {"regionn": "westeurope"}
    startup = 60.0

    @pytest.fixture(scope="class")
    def pool(self, fast_return, tmp_path_factory):
        tmp = tmp_path_factory.mktemp("conf-azure")
        host = LocalVMHost(evict_after=0.5)
        sdk = RecordingAzureSDK(host)
        try:
            with bnb.Pool("conf-az", backend="azure", dedicated=1, spot=1, ledger=Ledger(tmp / "l.sqlite"),
                          **azure_options(host, sdk, tmp)) as pool:
                yield pool
        finally:
            host.close()


def test_local_backend_close_ends_workers_that_will_not_close(caplog):
    """A LocalCluster whose close times out (its scheduler too busy, or a worker stuck)
    gets its worker processes killed and is closed again, instead of a Dask TimeoutError."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from batchnb.backends.local import LocalBackend
    from batchnb.spec import PoolSpec

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    class SlowCluster:         # a stand-in for the LocalCluster: its first close times out
        def __init__(self):
            self.closes = 0
            self.workers = {"dedicated-0": SimpleNamespace(process=SimpleNamespace(pid=worker.pid))}

        def close(self, timeout=None):
            self.closes += 1
            if self.closes == 1:
                raise TimeoutError(f"timed out after {timeout} s.")
    backend = LocalBackend(PoolSpec("p", dedicated=1))
    backend.cluster = SlowCluster()
    backend.close()
    assert worker.wait(timeout=10) == -9 and backend.cluster.closes == 2
    assert "did not close within" in caplog.text
