"""The dependency graph: refusals at add, cycles, downstream; property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from batchnb.engine.graph import DepGraph
from batchnb.errors import SpecError


def test_unknown_ids_are_named():
    g = DepGraph()
    g.add([("a", ())])
    with pytest.raises(SpecError) as err:
        g.add([("b", ("a", "ghost")), ("c", ("phantom",))])
    assert "ghost" in str(err.value) and "phantom" in str(err.value)
    assert "b" not in g  # nothing of a refused add is kept


def test_cycle_is_refused_with_its_path():
    g = DepGraph()
    with pytest.raises(SpecError, match=r"each depends on the next\): a -> c -> b -> a"):
        g.add([("a", ("c",)), ("b", ("a",)), ("c", ("b",))])


def test_ids_are_unique_ignoring_case():
    g = DepGraph()
    g.add([("Task", ())])
    assert "task" in g
    with pytest.raises(SpecError, match="already has"):
        g.add([("TASK", ())])
    with pytest.raises(SpecError, match="twice"):
        g.add([("x", ()), ("X", ())])


def test_downstream_is_transitive():
    g = DepGraph()
    g.add([("a", ()), ("b", ("a",)), ("c", ("b",)), ("d", ("a", "c")), ("e", ())])
    assert set(g.downstream("a")) == {"b", "c", "d"}
    assert g.downstream("e") == []


def test_replace_drops_old_edges_and_checks_cycles():
    g = DepGraph()
    g.add([("a", ()), ("b", ("a",))])
    with pytest.raises(SpecError, match="cycle"):
        g.add([("a", ("b",))], replacing=["a"])
    g.add([("b", ())], replacing=["b"])
    assert g.dependents["a"] == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 14), max_size=4), min_size=1, max_size=15))
def test_random_graphs_are_accepted_iff_acyclic(edges):
    items = [(f"t{i}", tuple(f"t{d}" for d in deps if d < len(edges))) for i, deps in enumerate(edges)]
    acyclic = _acyclic({k: v for k, v in items})
    g = DepGraph()
    try:
        g.add(items)
        added = True
    except SpecError as exc:
        added = False
        assert ("cycle" in str(exc)) or ("itself" in str(exc))
    assert added == acyclic
    if added:  # every dependent is downstream of what it depends on
        for tid, deps in items:
            for d in deps:
                assert tid.lower() in g.downstream(d.lower())


def _acyclic(deps: dict) -> bool:
    state = {}

    def visit(n):
        if state.get(n) == 1:
            return False
        if state.get(n) == 2:
            return True
        state[n] = 1
        ok = all(visit(d) for d in deps.get(n, ()))
        state[n] = 2
        return ok
    return all(visit(n) for n in deps)
