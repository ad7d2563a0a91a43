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


def _public_callables():
    """Every public function of ``batchnb``, and the public methods and properties of Pool, Job and Task."""
    import inspect
    for name in bnb.__all__:
        obj = getattr(bnb, name)
        if inspect.isfunction(obj):
            yield name, obj
    for cls in (bnb.Pool, bnb.Job, bnb.Task):
        for name, member in vars(cls).items():
            if name.startswith("_") and name not in ("__init__", "__enter__", "__exit__", "__await__"):
                continue
            if isinstance(member, property):
                member = member.fget
            elif isinstance(member, (classmethod, staticmethod)):
                member = member.__func__
            if inspect.isfunction(member):
                yield f"{cls.__name__}.{name}", member


def _hint_names(module) -> dict:
    """The module's names, with those it imports for type checkers only (``if TYPE_CHECKING:``)."""
    import ast
    import inspect
    names = dict(vars(module))
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            exec(compile(ast.Module(body=node.body, type_ignores=[]), module.__file__, "exec"), names)
    return names


def test_the_public_api_is_typed():
    import inspect
    import typing
    missing = []
    callables = list(_public_callables())
    for qualname, fn in callables:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        if "." in qualname and params and params[0].name in ("self", "cls"):
            params = params[1:]
        missing += [f"{qualname}({p.name})" for p in params if p.annotation is inspect.Parameter.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{qualname} -> ?")
        # Every hint names something that exists: a renamed class leaves no dangling name behind.
        # (public functions show ``batchnb``; an audited method's names are those of the one it wraps)
        module = sys.modules[inspect.unwrap(fn).__globals__["__name__"]]
        typing.get_type_hints(fn, globalns=_hint_names(module))
    assert missing == []
    assert len(callables) > 40


def test_the_package_says_it_is_typed():
    from pathlib import Path
    assert (Path(bnb.__file__).parent / "py.typed").is_file()
    # hatchling puts every file under batchnb/ in the wheel (as it does batchnb.yaml and data/prices.json)
    assert 'packages = ["batchnb"]' in (Path(bnb.__file__).parents[1] / "pyproject.toml").read_text()
