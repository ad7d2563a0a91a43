"""The backend registry, and every shipped backend through the conformance suite
:class:`batchnb.backends.testing.BackendConformance` (as fsspec's tests/abstract).

Each ``Test*Backend`` class makes a pool of one dedicated and one spot node of
one slot each and says what the backend can do; the suite checks the contract
of ``batchnb/backends/base.py`` through it. Two more pools name their nodes
with no group words, so their groups can only come from the backend. The
Azure backend's class is in test_azure_conformance.py: one Azure pool for
the suite, its VMs being slow to boot.
"""

from __future__ import annotations

import contextlib

import dask
import pytest

import batchnb as bnb
from batchnb import backends
from batchnb.backends import get_backend, register
from batchnb.backends.address import AddressBackend
from batchnb.backends.azure import AzureBackend
from batchnb.backends.local import LocalBackend
from batchnb.backends.testing import BackendConformance, states, wait_for
from batchnb.errors import MissingDependency, SpecError
from batchnb.engine.ledger import Ledger
from batchnb.spec import PoolSpec


# -- the registry -------------------------------------------------------------------
def test_registry_knows_local_address_and_azure_lazily():
    assert get_backend("local") is LocalBackend
    assert get_backend("address") is AddressBackend
    assert get_backend("azure") is AzureBackend
    with pytest.raises(SpecError, match="known backends are .*address.*azure.*local.*slurm") as err:
        get_backend("no-such-backend")
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


# -- the conformance suite (batchnb.backends.testing), for each shipped backend -----------
class TestLocalBackend(BackendConformance):
    name = "local"

    def make_pool(self, tmp_path):
        return bnb.Pool("conf-local", dedicated=1, spot=1, ledger=Ledger(tmp_path / "l.sqlite"))


class PlainNamesBackend(LocalBackend):
    """The local backend with node ids that say nothing of their group: its groups must come
    from what it was asked for (name inference would call ``vm-1`` dedicated)."""

    name = "local-plain-names"

    def _new_id(self, group: str) -> str:
        return f"vm-{len(self._groups)}"


class TestBackendDeclaresGroups(BackendConformance):
    name = PlainNamesBackend.name
    node_groups = {"vm-0": "dedicated", "vm-1": "spot"}

    @pytest.fixture(scope="class", autouse=True)
    def registered(self):
        register(self.name, PlainNamesBackend)
        yield
        backends.registry.pop(self.name, None)

    def make_pool(self, tmp_path):
        return bnb.Pool("conf-plain", backend=self.name, dedicated=1, spot=1, ledger=Ledger(tmp_path / "l.sqlite"))

    def test_a_new_node_gets_the_group_it_was_asked_for(self, up):
        up.resize(spot=2)
        try:
            new = wait_for(lambda: [i for i, s in states(up).items() if i not in self.node_groups and s == "idle"],
                           self.startup, "a new spot node to join")
            assert len(new) == 1 and new[0].startswith("vm-") and up._backend.group(new[0]) == "spot"
            assert {n.id: n.group for n in up.nodes()}[new[0]] == "spot"
        finally:
            up.resize(spot=1)
        wait_for(lambda: not set(states(up)) - set(self.node_groups), self.startup, "the new node to leave")


@contextlib.contextmanager
def address_pool(name: str, workers, tmp_path, **options):
    """A pool on a scheduler batchnb did not start, with one-slot workers of these names."""
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=0, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                           resources={"slots": 1})
    for worker in workers:
        cluster.worker_spec[worker] = dict(cluster.new_spec)
    cluster.sync(cluster._correct_state)
    try:
        with bnb.Pool(name, backend="address", address=cluster.scheduler_address,
                      ledger=Ledger(tmp_path / "l.sqlite"), **options) as pool:
            yield pool
    finally:
        cluster.close()


class TestAddressBackend(BackendConformance):
    name = "address"
    can_scale = False
    can_preempt = False

    def make_pool(self, tmp_path):
        # workers named as nodes: the address backend's default convention (no groups=)
        return address_pool("conf-addr", self.node_groups, tmp_path)

    def test_address_is_checked(self):
        with pytest.raises(SpecError) as err:
            AddressBackend(PoolSpec("x", backend="address"), address="localhost:8786")
        assert err.value.field == "address"


class TestAddressBackendGroups(BackendConformance):
    """Workers whose names say nothing (one even says the wrong thing): ``groups=`` says which is which."""

    name = "address"
    can_scale = False
    can_preempt = False
    node_groups = {"spot-a": "dedicated", "w-b": "spot"}

    def make_pool(self, tmp_path):
        return address_pool("conf-addr-groups", self.node_groups, tmp_path, groups={"w-b": "spot"})


def test_address_groups_are_checked():
    spec = PoolSpec("x", backend="address")
    with pytest.raises(SpecError) as err:
        AddressBackend(spec, address="tcp://127.0.0.1:1", groups={"w0": "lowpri"})
    assert err.value.field == "groups['w0']"
    with pytest.raises(SpecError) as err:
        AddressBackend(spec, address="tcp://127.0.0.1:1", groups=["w0"])
    assert err.value.field == "groups"
    named = AddressBackend(spec, address="tcp://127.0.0.1:1", groups={"spot-0": "dedicated", "n1": "spot"})
    assert (named.group("spot-0"), named.group("n1"), named.group("other")) == ("dedicated", "spot", "dedicated")
    assert AddressBackend(spec, address="tcp://127.0.0.1:1").group("spot-0") == "spot"     # its default convention


def test_a_spec_cluster_backend_remembers_a_released_nodes_group():
    """A released node's worker may linger a moment in the scheduler: it keeps its group."""
    from types import SimpleNamespace
    backend = PlainNamesBackend(PoolSpec("p", dedicated=0))
    backend.cluster = SimpleNamespace(worker_spec={}, loop=SimpleNamespace(add_callback=lambda *a: None),
                                      _correct_state=None)
    backend._worker_spec = lambda group, node_id: {}
    assert backend.scale("spot", 1) == ["vm-0"] and backend.group("vm-0") == "spot"
    backend.remove(["vm-0"])
    assert backend.requested() == {} and backend.group("vm-0") == "spot"
    assert backend.group("never-asked-for") == "dedicated"


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


class NoticeFileBackend(LocalBackend):
    """The local backend whose nodes hear eviction notices from a file, as Azure's poll its
    metadata service: what the Backend ABC's notice_plugins() hands the pool."""

    name = "local-notices"
    events_url = ""

    def notice_plugins(self) -> list:
        from batchnb.node.spotnotice import ScheduledEventsPlugin
        return [ScheduledEventsPlugin(self.events_url, vm_name_template="{node_id}", poll_interval=0.1, grace=0.2)]


def test_a_backends_notice_plugins_make_its_nodes_preemption_notices_requeue(tmp_path, monkeypatch):
    import json
    from batchnb.engine.ledger import Ledger
    events = tmp_path / "scheduledevents.json"
    events.write_text('{"Events": []}')
    monkeypatch.setattr(NoticeFileBackend, "events_url", events.as_uri())
    register(NoticeFileBackend.name, NoticeFileBackend)
    # The requeued task waits for the preempted node, the pool's only one: it returns sooner than
    # the 5 s default, yet stays preempted long enough for the wait below to see it.
    try:
        with dask.config.set({"batchnb.preempt-return-after": 1.5}), \
                bnb.Pool("notices", backend=NoticeFileBackend.name, dedicated=0, spot=1,
                         ledger=Ledger(tmp_path / "l.sqlite")) as pool:
            job = pool.job("j", max_task_retries=0)
            job.add_task("t", "sleep 2")
            wait_for(lambda: states(pool)["spot-0"] == "running", 30, "spot-0 running")
            events.write_text(json.dumps({"Events": [{
                "EventId": "e1", "EventType": "Preempt", "Resources": ["spot-0"], "EventStatus": "Scheduled",
                "NotBefore": "Wed, 25 Nov 2026 08:00:00 GMT"}]}))
            wait_for(lambda: states(pool).get("spot-0") == "preempted", 30, "spot-0 preempted by its notice")
            events.write_text('{"Events": []}')
            assert job.wait(timeout=90, quiet=True).ok
            assert job.task("t").info().requeues == 1
    finally:
        backends.registry.pop(NoticeFileBackend.name, None)
