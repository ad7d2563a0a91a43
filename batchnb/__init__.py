"""batchnb: Azure Batch's model — pools, jobs, tasks — in notebooks, on Dask.

>>> import batchnb as bnb
>>> # with bnb.Pool("local") as pool:
>>> #     job = pool.job("hello"); job.add_task("t1", "echo hi"); print(job.wait())

Heavy parts (Dask, the pool) load on first use, so ``import batchnb`` is quick
and never loads a widget library.
"""

from __future__ import annotations

import importlib

# Load batchnb's defaults into dask.config at once: a `with dask.config.set({"batchnb.x": ...})`
# entered before they were loaded would delete the whole batchnb section when it exits.
from . import _config  # noqa: F401
from . import spec
from .errors import (BackendError, BatchError, FormulaError, JobTerminated, LeaseHeld, LedgerError,
                     MissingDependency, SpecError, StagingError, TaskFailed, WaitTimeout)
from .spec.model import (AppPackage, ExitOptions, JobSpec, MultiInstance, OutputFile, PoolSpec, ResourceFile,
                         Retry, StartTask, TaskIdRange, TaskSpec)
from .states import JobState, NodeState, TaskState

__version__ = "0.1.0"

_LAZY = {
    "Pool": "batchnb.pool", "NodeInfo": "batchnb.pool",
    "Job": "batchnb.job", "Task": "batchnb.task", "TaskInfo": "batchnb.task",
    "JobResult": "batchnb.result", "Ledger": "batchnb.engine.ledger",
    "PriceTable": "batchnb.cost", "Cost": "batchnb.cost",
    "current_task": "batchnb.node.context", "TaskContext": "batchnb.node.context",
    "jobs": "batchnb.engine.offline", "prune": "batchnb.engine.offline", "current_ledger": "batchnb.engine.offline",
}

__all__ = [
    "AppPackage", "BackendError", "BatchError", "Cost", "ExitOptions", "FormulaError", "Job", "JobResult",
    "JobSpec", "JobState", "JobTerminated", "LeaseHeld", "Ledger", "LedgerError", "MissingDependency",
    "MultiInstance", "NodeInfo", "NodeState", "OutputFile", "Pool", "PoolSpec", "PriceTable", "ResourceFile",
    "Retry", "SpecError", "StagingError", "StartTask", "Task", "TaskFailed", "TaskIdRange", "TaskInfo",
    "TaskContext", "TaskSpec", "TaskState", "WaitTimeout", "current_ledger", "current_task", "jobs", "prune", "spec",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
