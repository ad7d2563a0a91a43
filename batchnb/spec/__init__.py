"""The model: frozen specs of pools, jobs and tasks, validated when made; job files; Azure REST import."""

from .model import *  # noqa: F401,F403
from .model import __all__, dependency_ids, from_dict, to_dict  # noqa: F401
from .policy import DEPENDENCY_ACTIONS, JOB_ACTIONS  # noqa: F401
from .resources import UPLOAD_CONDITIONS  # noqa: F401
