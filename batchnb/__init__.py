"""batchnb: Azure Batch's model — pools, jobs, tasks — in notebooks, on Dask.

>>> import batchnb as bnb
>>> spec = bnb.TaskSpec("t1", "echo hi", retry=bnb.Retry(max=2))
>>> spec.id, spec.retry.max
('t1', 2)
>>> bnb.TaskState("succeeded") in {bnb.TaskState.SUCCEEDED}
True

Heavy parts (Dask, the pool) load on first use, so ``import batchnb`` is quick
and never loads a widget library. Every public class and function shows
``batchnb`` as its module: that is where to find it, whichever folder holds it.
"""

from __future__ import annotations

import importlib

# batchnb's defaults go into dask.config the moment it is imported (not here: Dask is half of the
# import time): a `with dask.config.set({"batchnb.x": ...})` entered before they were loaded would
# delete the whole batchnb section when it exits.
from . import _config  # noqa: F401
from . import alerts, spec
from .errors import (AzureImportWarning, BackendError, BatchError, FormulaError, JobTerminated, LeaseHeld,
                     LedgerError, MissingDependency, PermissionDenied, PoolStalled, PriceRefreshError, SpecError,
                     StagingError, TaskFailed, WaitTimeout)
from .spec.model import (AppPackage, ExitOptions, JobSpec, MultiInstance, OutputFile, PoolSpec, ResourceFile,
                         Retry, StartTask, TaskIdRange, TaskSpec)
from .spec.container import Container
from .spec.prep import JobPrep, JobRelease
from .spec.schedule import ScheduleSpec
from .states import JobState, NodeGroup, NodeState, ScheduleState, TaskState

__version__ = "0.1.0"

_LAZY = {
    "Pool": "batchnb.pool", "NodeInfo": "batchnb.pool",
    "Job": "batchnb.job", "Task": "batchnb.task", "TaskInfo": "batchnb.task", "SubtaskInfo": "batchnb.task",
    "TaskList": "batchnb.task",
    "JobResult": "batchnb.result", "Ledger": "batchnb.engine.ledger",
    "PriceTable": "batchnb.cost", "Cost": "batchnb.cost",
    "current_task": "batchnb.node.context", "TaskContext": "batchnb.node.context",
    "pools": "batchnb.agent.registry",
    "Schedule": "batchnb.schedule", "ScheduleRun": "batchnb.schedule",
    "TaskCounts": "batchnb.engine.counters", "JobStats": "batchnb.engine.counters",
    "AuditRecord": "batchnb.engine.audit",
    "jobs": "batchnb.engine.offline", "prune": "batchnb.engine.offline", "current_ledger": "batchnb.engine.offline",
}

__all__ = [
    "AppPackage", "AzureImportWarning", "BackendError", "BatchError", "Cost", "ExitOptions", "FormulaError", "Job",
    "JobResult", "JobSpec", "JobState", "JobTerminated", "LeaseHeld", "Ledger", "LedgerError", "MissingDependency",
    "MultiInstance", "NodeGroup", "NodeInfo", "NodeState", "OutputFile", "Pool", "PoolSpec", "PoolStalled",
    "PriceRefreshError", "Container", "PermissionDenied",
    "PriceTable", "ResourceFile", "Retry", "SpecError", "StagingError", "StartTask", "SubtaskInfo", "Task", "TaskFailed",
    "TaskIdRange", "TaskInfo", "TaskList", "TaskContext", "TaskSpec", "TaskState", "WaitTimeout", "current_ledger",
    "alerts", "current_task", "jobs", "pools", "prune", "spec",
    "JobPrep", "JobRelease", "JobStats", "TaskCounts",
    "Schedule", "ScheduleRun", "ScheduleSpec", "ScheduleState",
    "AuditRecord",
]

#: public name -> the module that defines it (doctests and tools find the source there).
_DEFINED_IN: dict[str, str] = {}


def _as_public(name: str, value):
    """Show ``value`` as ``batchnb.<name>``: where users import it from (httpx does the same).

    Pickle still finds it, since ``batchnb.<name>`` is the object itself.
    """
    module = getattr(value, "__module__", None)
    if isinstance(module, str) and module.startswith("batchnb.") and (isinstance(value, type) or callable(value)):
        _DEFINED_IN[name] = module
        value.__module__ = "batchnb"
    return value


for _name in __all__:
    if _name in globals():
        _as_public(_name, globals()[_name])
del _name


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchnb' has no attribute {name!r}")
    value = _as_public(name, getattr(importlib.import_module(module), name))
    globals()[name] = value
    return value


def __dir__():
    return sorted([*__all__, "__version__"])
