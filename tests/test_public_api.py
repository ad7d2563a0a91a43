"""``batchnb``'s public surface is honest both ways, and its vocabulary is defined once."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import batchnb as bnb
from batchnb import errors


def _modules():
    for info in pkgutil.walk_packages(bnb.__path__, "batchnb."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def test_dir_shows_the_public_api_and_nothing_else():
    assert dir(bnb) == sorted([*bnb.__all__, "__version__"])
    for name in bnb.__all__:
        assert getattr(bnb, name) is not None, name


def test_every_public_class_and_function_shows_batchnb_as_its_module():
    shown = {name: getattr(bnb, name).__module__ for name in bnb.__all__ if not inspect.ismodule(getattr(bnb, name))}
    assert {n: m for n, m in shown.items() if m != "batchnb"} == {}
    assert repr(bnb.TaskSpec) == "<class 'batchnb.TaskSpec'>"


def test_public_objects_still_pickle_by_reference():
    import pickle
    spec = bnb.TaskSpec("t1", "echo hi", retry=bnb.Retry(max=2))
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert pickle.loads(pickle.dumps(bnb.TaskState.RUNNING)) is bnb.TaskState.RUNNING


def test_every_error_and_warning_lives_in_errors_and_is_exported():
    defined = set()
    for module in _modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, (bnb.BatchError, Warning)) \
                    and bnb._DEFINED_IN.get(name, obj.__module__) == module.__name__:
                defined.add((module.__name__, name))
    assert {m for m, _ in defined} == {"batchnb.errors"}
    exported = {n for n in bnb.__all__ if inspect.isclass(getattr(bnb, n))
                and issubclass(getattr(bnb, n), (bnb.BatchError, Warning))}
    assert {n for _, n in defined} == exported
    assert all(n in errors.__doc__ for n in exported), "the tree in errors.py's docstring names every error"


def test_azure_import_warning_is_the_one_from_azure_json():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnb.spec.from_azure({"id": "t", "commandLine": "echo", "userIdentity": {"userName": "x"}})
    assert any(issubclass(w.category, bnb.AzureImportWarning) for w in caught)


def test_state_and_group_names_are_not_retyped_outside_states():
    """A group of state names, or the node group pair, comes from batchnb/states.py (LIVE_TASK_STATES,
    FAILED_TASK_STATES, TASK_STATE_ORDER, NODE_GROUPS, ...), never a literal tuple, list or set.

    One name used as a value (``state == "running"``) is fine; so are examples in docstrings, which
    show what a user types. The formula language (autoscale.py, formula/) and the cost columns
    (cost/value.py, cost/meter.py) are vocabularies of their own that use the same words. The source
    is read as a syntax tree, so a group split over lines is caught and comments are not."""
    import ast
    from pathlib import Path

    from batchnb.states import JobState, NodeGroup, NodeState, TaskState
    states = {s.value for vocabulary in (TaskState, JobState, NodeState) for s in vocabulary}
    groups = {g.value for g in NodeGroup}
    root = Path(bnb.__file__).parent
    elsewhere = {root / "states.py", root / "autoscale.py", root / "cost" / "value.py", root / "cost" / "meter.py",
                 *(root / "formula").rglob("*.py")}
    found = []
    for path in sorted(set(root.rglob("*.py")) - elsewhere):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(words) >= 2 and (words <= states or words == groups):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {sorted(words)}")
    assert found == []
