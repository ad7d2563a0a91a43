"""The conformance suite every backend inherits (as fsspec ships ``fsspec/tests/abstract``).

A backend's test module subclasses :class:`BackendConformance`, names the
backend, says what it can do and makes its pool; pytest then runs every
check of the suite against that pool::

    # tests/test_conformance.py of a package that registers backend "mine"
    import batchnb as bnb
    from batchnb.backends.testing import BackendConformance

    class TestMine(BackendConformance):
        name = "mine"                  # its registry name (entry point or register())
        can_preempt = False            # as the backend class says

        def make_pool(self, tmp_path):
            return bnb.Pool("conf-mine", backend="mine", dedicated=1, spot=1,
                            ledger=str(tmp_path / "ledger.sqlite"), my_option=...)

The suite checks the contract of :mod:`batchnb.backends.base` through a real
pool: the registry gives the backend, nodes are known by id with the group
the backend declares (never one read from their names) and the slots asked
for, tasks see their node's id and group, a job runs on every node, scaling,
preemption with requeue, and unknown options are refused.

Only test suites import this module: it needs pytest (``import
batchnb.backends`` does not load it).
"""

from __future__ import annotations

import contextlib
import time

import dask
import pytest

from .. import _config
from ..errors import BackendError, SpecError
from ..spec.model import PoolSpec
from ..states import NodeGroup
from . import get_backend

__all__ = ["BackendConformance", "states", "wait_for"]


def states(pool) -> dict:
    """Node id -> state of every node of ``pool``."""
    return {n.id: n.state for n in pool.nodes()}


def wait_for(cond, timeout: float, what: str):
    """Return ``cond()``'s first true value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class BackendConformance:
    """What every backend must do; subclass it in a test module as ``Test<Backend>``.

    A subclass sets ``name`` and, where they differ from the defaults, the
    other attributes below, and makes its pool in :meth:`make_pool` (or
    overrides the class-scoped ``pool`` fixture itself). The pool is made
    once per class; each test uses its own job ids.

    Attributes
    ----------
    name : str
        The backend's registry name.
    can_scale, can_preempt : bool
        What the backend says it can do; a backend that cannot must refuse
        with :class:`~batchnb.errors.BackendError`.
    node_groups : dict
        The pool's nodes once it is up, node id -> group: by default
        ``dedicated-0`` and ``spot-0``; a backend that names nodes
        otherwise lists its names here.
    bad_options : dict
        Options the backend must refuse, naming the first one.
    startup : float
        Seconds a node may take to join (and ``batchnb.node-start-timeout``
        while the class runs, when that is shorter).
    preempt_return_after : float
        ``batchnb.preempt-return-after`` while the class runs.

    Examples
    --------
    >>> class TestMine(BackendConformance):
    ...     name = "mine"
    ...     can_preempt = False
    ...     def make_pool(self, tmp_path):
    ...         ...   # bnb.Pool("conf-mine", backend="mine", dedicated=1, spot=1, ...)
    >>> TestMine.node_groups
    {'dedicated-0': 'dedicated', 'spot-0': 'spot'}
    """

    name = ""
    can_scale = True
    can_preempt = True
    node_groups: dict = {"dedicated-0": NodeGroup.DEDICATED.value, "spot-0": NodeGroup.SPOT.value}
    bad_options: dict = {"no_such_option": 1}
    startup = 30.0
    preempt_return_after = 0.3

    def make_pool(self, tmp_path):
        """A started ``bnb.Pool`` on this backend whose nodes are :attr:`node_groups`, one task
        slot each, with its ledger under ``tmp_path`` (a fresh folder). It may also be a
        context manager that yields the pool (for what must be cleaned up after it)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_pool(tmp_path) or a `pool` fixture")

    # -- fixtures -------------------------------------------------------------------
    @pytest.fixture(scope="class", autouse=True)
    def _suite_config(self):
        # Preempted nodes come back soon; and a node is given the suite's ``startup`` to join
        # before the pool calls it unusable and replaces it (under load a VM's boot outlasted
        # the default 120 s, and the node the checks wait for by id was replaced).
        start = max(self.startup, _config.seconds("node-start-timeout"))
        with dask.config.set({"batchnb.preempt-return-after": self.preempt_return_after,
                              "batchnb.node-start-timeout": f"{start}s"}):
            yield

    @pytest.fixture(scope="class")
    def pool(self, tmp_path_factory, _suite_config):
        made = self.make_pool(tmp_path_factory.mktemp(f"conformance-{self.name or 'backend'}"))
        with (made if hasattr(made, "__enter__") else contextlib.nullcontext(made)) as pool:
            yield pool

    @pytest.fixture
    def up(self, pool):
        """The pool once all its nodes are idle."""
        wait_for(lambda: states(pool) == {i: "idle" for i in self.node_groups}, self.startup,
                 f"{', '.join(self.node_groups)} idle")
        return pool

    @pytest.fixture
    def job_id(self, request):
        """A job id unique to the test."""
        name = request.node.name.replace("[", "-").replace("]", "")
        return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:60]

    def _ids(self, group: str) -> list[str]:
        return [i for i, g in self.node_groups.items() if g == group]

    # -- the checks -------------------------------------------------------------------
    def test_registry_gives_this_backend(self, up):
        assert get_backend(self.name) is type(up._backend)
        assert up._backend.can_scale is self.can_scale and up._backend.can_preempt is self.can_preempt

    def test_nodes_are_named_by_id_with_their_group(self, up):
        nodes = {n.id: n for n in up.nodes()}
        assert {i: (n.group, n.slots) for i, n in nodes.items()} == {i: (g, 1) for i, g in self.node_groups.items()}
        assert sorted(w.name for w in up._engine.workers()) == sorted(self.node_groups)

    def test_groups_come_from_the_backend(self, up):
        backend = up._backend
        assert {i: backend.group(i) for i in self.node_groups} == self.node_groups
        assert {w.name: w.group for w in up._engine.workers()} == self.node_groups
        assert {n.id: n.group for n in up.nodes()} == {i: backend.group(i) for i in self.node_groups}

    def test_tasks_see_their_nodes_group(self, up, job_id):
        job = up.job(job_id, max_task_retries=0)
        tasks = [job.add_task(f"t{i}", 'sleep 0.2; echo "$AZ_BATCH_NODE_ID $AZ_BATCH_NODE_IS_DEDICATED"')
                 for i in range(2 * len(self.node_groups))]
        assert job.wait(timeout=60).ok
        seen = dict(t.stdout().split() for t in tasks)
        assert seen == {i: "true" if g == NodeGroup.DEDICATED.value else "false"
                        for i, g in self.node_groups.items()}

    def test_a_job_runs_on_every_node(self, up, job_id):
        job = up.job(job_id, max_task_retries=0)
        tasks = [job.add_task(f"t{i}", "sleep 0.2; echo $AZ_BATCH_NODE_ID") for i in range(2 * len(self.node_groups))]
        assert job.wait(timeout=60).ok
        ran = {t.stdout().strip() for t in tasks}
        assert ran == set(self.node_groups) == {t.node for t in job.tasks()}

    def test_scale_up_and_down(self, up):
        dedicated = len(self._ids(NodeGroup.DEDICATED.value))
        if not self.can_scale:
            with pytest.raises(BackendError, match="cannot scale"):
                up.resize(dedicated=dedicated + 1)
            return
        up.resize(dedicated=dedicated + 1)
        new = wait_for(lambda: [i for i, s in states(up).items() if i not in self.node_groups and s == "idle"],
                       self.startup, "a new dedicated node to join")
        assert len(new) == 1 and {n.id: n.group for n in up.nodes()}[new[0]] == NodeGroup.DEDICATED.value
        up.resize(dedicated=dedicated)
        wait_for(lambda: new[0] not in states(up), self.startup, f"{new[0]} to leave")
        assert set(states(up)) == set(self.node_groups)
        # let go: its worker, were it to join late or still be listed, is not taken back
        assert up._backend.released(new[0]) and not any(map(up._backend.released, self.node_groups))

    def test_preempt_requeues_and_the_node_comes_back(self, up, job_id):
        if not self.can_preempt:   # any node: a backend that cannot preempt may have no spot nodes
            with pytest.raises(BackendError, match="cannot preempt"):
                up.preempt(next(iter(self.node_groups)))
            return
        spot = self._ids(NodeGroup.SPOT.value)[0]
        job = up.job(job_id, max_task_retries=0)
        for i in range(2):
            job.add_task(f"t{i}", "sleep 1")
        wait_for(lambda: states(up)[spot] == "running", 20, f"{spot} running")
        up.preempt(spot)
        assert states(up)[spot] == "preempted"
        assert job.wait(timeout=60).ok
        assert sum(t.requeues for t in job.tasks()) == 1
        wait_for(lambda: states(up).get(spot) == "idle", self.startup, f"{spot} back")
        assert {n.id: n.group for n in up.nodes()}[spot] == NodeGroup.SPOT.value

    def test_a_node_has_the_suites_startup_to_join(self, pool):
        # else a node slower than node-start-timeout is replaced under a new id, and the checks
        # that wait for the nodes by id time out (the Azure stand-in's VMs, on a loaded machine)
        assert pool._dispatcher._node_start_timeout >= self.startup

    def test_unknown_options_are_refused(self):
        with pytest.raises((SpecError, BackendError), match=next(iter(self.bad_options))):
            get_backend(self.name)(PoolSpec("x", backend=self.name), **self.bad_options)
