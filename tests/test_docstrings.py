"""Every ``>>>`` example in batchnb's docstrings runs and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys

import pytest

import batchnb

MODULES = sorted(m.name for m in pkgutil.walk_packages(batchnb.__path__, "batchnb.") if not m.name.endswith(".__main__"))


def _open_pools() -> set:
    pool = sys.modules.get("batchnb.pool")
    return set(pool._open_pools) if pool is not None else set()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch, home):
    # Examples start real pools: each module's in a folder and a batchnb home (ledger) of its own.
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    before = _open_pools()
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    finally:
        for pool in _open_pools() - before:         # an example that failed half-way left its pool open
            pool.close()
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
