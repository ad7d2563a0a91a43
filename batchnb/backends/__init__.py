"""Backends: the ways a pool gets nodes, found by name.

Built-in names import lazily and say which extra to install; third parties
register more under the entry-point group ``batchnb.backends``, and check
theirs with the conformance suite :mod:`batchnb.backends.testing` (imported
by test suites only: it needs pytest).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..errors import MissingDependency, SpecError
from .base import Backend, WorkerInfo

__all__ = ["Backend", "WorkerInfo", "get_backend", "registry", "register"]

registry: dict[str, dict] = {
    "local": {"class": "batchnb.backends.local.LocalBackend", "err": "pip install batchnb"},
    "address": {"class": "batchnb.backends.address.AddressBackend", "err": "pip install batchnb"},
    "azure": {"class": "batchnb.backends.azure.AzureBackend", "err": "pip install batchnb[azure]"},
    "gateway": {"class": "batchnb.backends.gateway.GatewayBackend", "err": "pip install batchnb[gateway]"},
    "slurm": {"class": "batchnb.backends.slurm.SlurmBackend", "err": "pip install batchnb[slurm]"},
}


def register(name: str, cls: str | type, err: str = "") -> None:
    """Add a backend under ``name`` (a class or its dotted path)."""
    registry[name] = {"class": cls, "err": err}


def _load(entry: dict) -> type:
    cls = entry["class"]
    if isinstance(cls, type):
        return cls
    module, _, attr = cls.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise MissingDependency(f"{exc}; install it with: {entry['err']}") from None


def get_backend(name: str) -> type[Backend]:
    if name not in registry:
        for ep in entry_points(group="batchnb.backends"):
            if ep.name == name:
                registry[name] = {"class": ep.load(), "err": ""}
                break
    if name not in registry:
        raise SpecError("backend", name, f"known backends are {', '.join(sorted(registry))}")
    return _load(registry[name])
