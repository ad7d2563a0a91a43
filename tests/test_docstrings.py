"""Every ``>>>`` example in batchnb's docstrings runs and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import batchnb

MODULES = ["batchnb"] + sorted(m.name for m in pkgutil.walk_packages(batchnb.__path__, "batchnb.")
                               if not m.name.endswith(".__main__"))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _tests(module) -> list[doctest.DocTest]:
    """The module's examples, and those of its public objects: they show ``batchnb`` as their
    module, so doctest's own search would pass them over in the module that defines them."""
    finder = doctest.DocTestFinder()
    for name in batchnb.__all__:
        getattr(batchnb, name)                      # lazy names record where they are defined on first use
    # ... and ``batchnb`` holds them all: their examples run once, with the module that defines them.
    elsewhere = {f"{module.__name__}.{n}" for n, m in batchnb._DEFINED_IN.items() if m != module.__name__}
    tests = [t for t in finder.find(module) if t.name not in elsewhere
             and not any(t.name.startswith(e + ".") for e in elsewhere)]
    for name, defined_in in batchnb._DEFINED_IN.items():
        if defined_in == module.__name__:
            tests += finder.find(getattr(batchnb, name), f"{module.__name__}.{name}", module=module,
                                 globs=vars(module))
    return tests


def _open_pools() -> set:
    pool = sys.modules.get("batchnb.pool")
    return set(pool._open_pools) if pool is not None else set()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch, home):
    # Examples start real pools: each module's in a folder and a batchnb home (ledger) of its own.
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    before = _open_pools()
    try:
        for test in _tests(module):
            runner.run(test)
    finally:
        for pool in _open_pools() - before:         # an example that failed half-way left its pool open
            pool.close()
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_public_classes_have_examples_that_run():
    # An example is code that runs: a `>>> # ...` line only looks like one.
    commented = [f"{p.relative_to(Path(batchnb.__file__).parent)}:{i}"
                 for p in Path(batchnb.__file__).parent.rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.match(r"\s*>>> #", line)]
    assert commented == []
