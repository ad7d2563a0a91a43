r"""The model: frozen specs of pools, jobs and tasks, validated when made; job files; Azure REST import.

``batchnb.spec`` is the public face of this folder: ``model`` holds the specs,
``codec`` their JSON/YAML forms (job files, the ledger), ``azure`` the import
of Azure Batch REST JSON.

>>> from batchnb import spec
>>> job = spec.loads("id: hello\ntasks:\n  - {id: a, command: echo hi}")
>>> job.id, [t.id for t in job.tasks]
('hello', ['a'])
"""

from .azure import from_azure
from .codec import dump, dumps, from_dict, load, loads, to_dict  # noqa: F401
from .model import *  # noqa: F401,F403
from .model import __all__ as _model_names
from .model import dependency_ids  # noqa: F401
from .policy import DEPENDENCY_ACTIONS, JOB_ACTIONS  # noqa: F401
from .resources import UPLOAD_CONDITIONS  # noqa: F401
from .schedule import ScheduleSpec, next_run  # noqa: F401

__all__ = [*_model_names, "load", "dump", "loads", "dumps", "from_azure", "ScheduleSpec"]
