"""batchnb's settings in ``dask.config`` under ``batchnb``, as dask-jobqueue does.

Defaults live in ``batchnb/batchnb.yaml``; users override them in
``~/.config/dask/batchnb.yaml``, with ``DASK_BATCHNB__...`` variables or
``dask.config.set({"batchnb.home": ...})``. ``BATCHNB_HOME`` wins for the home.

``import batchnb`` does not import Dask (half of its import time): the
defaults are loaded into ``dask.config`` the moment ``dask.config`` is
imported, by whoever imports it, so they are there before any
``dask.config.set({"batchnb.x": ...})`` can be entered (a ``with`` entered
before them would delete the whole batchnb section when it exits).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_defaults_file = Path(__file__).with_name("batchnb.yaml")
_loaded: list = []      # dask.config modules our defaults went into


def _load_defaults(module) -> None:
    # Again if the section is gone: a ``with dask.config.set`` entered before batchnb was imported
    # deletes it when it exits.
    if module in _loaded and "batchnb" in module.config:
        return
    import yaml
    with open(_defaults_file, encoding="utf-8") as fh:
        module.update_defaults(yaml.safe_load(fh))
    _loaded.append(module)


class _AfterDaskConfig:
    """A meta path finder that loads our defaults right after ``dask.config`` is executed."""

    def find_spec(self, name, path=None, target=None):
        if name != "dask.config":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module) -> None:
            run(module)
            _load_defaults(module)
        loader.exec_module = exec_module
        return spec


if "dask.config" in sys.modules:
    _load_defaults(sys.modules["dask.config"])
elif not any(isinstance(f, _AfterDaskConfig) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterDaskConfig())


def _dask_config():
    import dask.config
    _load_defaults(dask.config)      # in case it was imported before this module
    return dask.config


def get(key: str, default=None):
    return _dask_config().get(f"batchnb.{key}", default=default)


def home() -> Path:
    """The folder of the ledger, node directories and results (created on first use)."""
    path = Path(os.environ.get("BATCHNB_HOME") or get("home")).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)   # the ledger, node folders and results: the owner's
    return path


def seconds(key: str) -> float:
    from .spec.validate import duration
    return duration(get(key), f"batchnb.{key}", allow_none=False)
