"""A job's preparation and release tasks (Azure's jobPreparationTask and jobReleaseTask).

Part of :mod:`batchnb.spec`, which re-exports the public names. The
preparation task runs once on each node before the job's first task there;
the release task runs on each node that ran the preparation when the job
ends. Both are checked when made, as every spec is:

>>> JobPrep("pip install -r req.txt", retry=Retry(max=2)).retry.max
2
>>> JobRelease("rm -rf scratch").max_wall_clock
900.0
>>> JobRelease("true", max_wall_clock="1h")
Traceback (most recent call last):
...
batchnb.SpecError: release.max_wall_clock: 3600.0 is invalid: must be at most 900 s (15 minutes, Azure's limit for a release task)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from . import validate as v
from .policy import Retry
from .resources import _from_mapping, _inputs
from ..errors import SpecError

#: Azure's limit (and default) for a job release task's maxWallClockTime.
RELEASE_MAX_WALL_CLOCK = 900.0


def _command(value: Any, field_name: str):
    # As model._command (model imports this module, so it cannot be imported from there).
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise SpecError(field_name, value, "expected a non-empty command line string (run by /bin/sh -c) "
                                       "or a non-empty argv list of strings")


def _flag(value: Any, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(field_name, value, "expected True or False")
    return value


@v.checked_keywords
@dataclass(frozen=True)
class JobPrep:
    """The job's preparation task: run once on a node before the job's first task there.

    It holds one of the node's slots while it runs, stages its own
    ``inputs`` into its working directory (``AZ_BATCH_JOB_PREP_WORKING_DIR``
    for the job's tasks on that node) and is retried per its ``retry``
    (none by default). With ``wait_for_success`` (Azure's default) the
    job's tasks wait for it, and a node where it failed for good runs no
    task of the job; without, they run anyway. ``rerun_on_node_reboot``:
    a node whose worker restarts runs it again.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1) as pool:
    ...     job = pool.job("prepped", prep=bnb.JobPrep("echo ready > flag"),
    ...                    release=bnb.JobRelease("echo bye"), on_all_tasks_complete="terminate")
    ...     t = job.add_task("t1", "cat $AZ_BATCH_JOB_PREP_WORKING_DIR/flag")
    ...     print(job.wait().reason, t.stdout().strip())
    ...     print([(r.node_id, r.state) for r in job.prep_runs()], [r.state for r in job.release_runs()])
    all_tasks_complete ready
    [('dedicated-0', 'succeeded')] ['succeeded']
    """

    command: Any
    inputs: tuple = ()
    env: dict = field(default_factory=dict)
    retry: Retry | None = None
    max_wall_clock: Any = None
    wait_for_success: bool = True
    rerun_on_node_reboot: bool = True

    def __post_init__(self):
        object.__setattr__(self, "command", _command(self.command, "prep.command"))
        object.__setattr__(self, "inputs", _inputs(self.inputs, "prep.inputs"))
        object.__setattr__(self, "env", v.str_mapping(self.env, "prep.env"))
        retry = self.retry
        if isinstance(retry, Mapping):
            retry = _from_mapping(Retry, retry, "prep.retry")
        if retry is not None and not isinstance(retry, Retry):
            raise SpecError("prep.retry", retry, "expected bnb.Retry(max=..., delay=...)")
        object.__setattr__(self, "retry", retry)
        object.__setattr__(self, "max_wall_clock", v.duration(self.max_wall_clock, "prep.max_wall_clock"))
        object.__setattr__(self, "wait_for_success", _flag(self.wait_for_success, "prep.wait_for_success"))
        object.__setattr__(self, "rerun_on_node_reboot",
                           _flag(self.rerun_on_node_reboot, "prep.rerun_on_node_reboot"))

    @property
    def policy(self) -> Retry:
        """Its retries: Azure's default for a preparation task is none."""
        return self.retry if self.retry is not None else Retry(max=0)


@v.checked_keywords
@dataclass(frozen=True)
class JobRelease:
    """The job's release task: run on each node that ran the job's preparation, when the job ends.

    It runs when the job completes or is terminated (and, for a job still
    active, before its pool closes the nodes), after the job's tasks on
    that node have ended; no retries, and at most ``max_wall_clock`` (15
    minutes, Azure's default and limit). It sees ``AZ_BATCH_JOB_PREP_DIR``
    and ``AZ_BATCH_JOB_PREP_WORKING_DIR``. A job with a release task needs
    a preparation task, as in Azure.

    >>> JobRelease(["rm", "-rf", "scratch"]).command
    ('rm', '-rf', 'scratch')
    """

    command: Any
    env: dict = field(default_factory=dict)
    max_wall_clock: Any = RELEASE_MAX_WALL_CLOCK

    def __post_init__(self):
        object.__setattr__(self, "command", _command(self.command, "release.command"))
        object.__setattr__(self, "env", v.str_mapping(self.env, "release.env"))
        limit = v.duration(self.max_wall_clock, "release.max_wall_clock", allow_none=False)
        if limit <= 0 or limit > RELEASE_MAX_WALL_CLOCK:
            raise SpecError("release.max_wall_clock", limit,
                            "must be at most 900 s (15 minutes, Azure's limit for a release task)"
                            if limit > 0 else "must be positive")
        object.__setattr__(self, "max_wall_clock", limit)


def prep_field(value: Any, cls: type, name: str):
    """A JobSpec's ``prep``/``release``: the spec, a command line (or argv), or its mapping (a job file's)."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, (str, list, tuple)):
        return cls(value)
    if isinstance(value, Mapping):
        unknown = sorted((k for k in value if k not in cls.__dataclass_fields__), key=str)
        if unknown:
            raise v.unknown_keyword(f"bnb.{cls.__name__}", unknown[0], value[unknown[0]],
                                    tuple(cls.__dataclass_fields__), kind="field")
        if "command" not in value:
            raise SpecError(f"{name}.command", None, f"is required (in {dict(value)!r})")
        return cls(**value)
    raise SpecError(name, value, f"expected bnb.{cls.__name__}(command, ...) or a command line")
