"""batchnb's settings in ``dask.config`` under ``batchnb``, as dask-jobqueue does.

Defaults live in ``batchnb/batchnb.yaml``; users override them in
``~/.config/dask/batchnb.yaml``, with ``DASK_BATCHNB__...`` variables or
``dask.config.set({"batchnb.home": ...})``. ``BATCHNB_HOME`` wins for the home.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.config
import yaml

_defaults_file = Path(__file__).with_name("batchnb.yaml")
with open(_defaults_file, encoding="utf-8") as _fh:
    _DEFAULTS = yaml.safe_load(_fh)
dask.config.update_defaults(_DEFAULTS)


def get(key: str, default=None):
    return dask.config.get(f"batchnb.{key}", default=default)


def home() -> Path:
    """The folder of the ledger, node directories and results (created on first use)."""
    path = Path(os.environ.get("BATCHNB_HOME") or get("home")).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)   # the ledger, node folders and results: the owner's
    return path


def seconds(key: str) -> float:
    from .spec.validate import duration
    return duration(get(key), f"batchnb.{key}", allow_none=False)
