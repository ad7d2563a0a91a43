"""Frozen specifications of pools, jobs and tasks, validated when made.

A spec is plain data: it knows nothing of Dask. Every field is checked in
``__post_init__`` and a bad one raises :class:`~batchnb.SpecError`
naming the field and the value. ``to_dict``/``from_dict`` give the JSON form
the ledger stores and job files use; :func:`load`, :func:`dump` and
:func:`from_azure` read and write job files and Azure Batch REST JSON.

>>> t = TaskSpec("t1", "echo hi", max_wall_clock="10m")
>>> t.max_wall_clock
600.0
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import validate as v
# Re-exported: they are part of this module's public face.
from .resources import UPLOAD_CONDITIONS, OutputFile, ResourceFile, _inputs, _outputs, _url  # noqa: F401
from .policy import DEPENDENCY_ACTIONS, JOB_ACTIONS, ExitConditions, ExitOptions, Retry  # noqa: F401
from .container import Container, container as _container, container_runtime as _container_runtime
from .prep import JobPrep, JobRelease, prep_field as _prep_field
from .deps import TaskIdRange, dependency_ids  # noqa: F401 - ranges stay ranges: see deps
from ..errors import SpecError

_NO_DEPENDENCIES = dependency_ids(())     # shared: a DependsOn is never changed once made

NODE_FILLS = ("spread", "pack")
ALL_TASKS_COMPLETE = ("noaction", "terminate")
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")

__all__ = [
    "ResourceFile", "OutputFile", "Retry", "ExitOptions", "ExitConditions", "MultiInstance",
    "StartTask", "AppPackage", "PythonCall", "TaskSpec", "JobSpec", "PoolSpec", "TaskIdRange", "Container",
    "JobPrep", "JobRelease",
]

@v.checked_keywords
@dataclass(frozen=True)
class MultiInstance:
    """An MPI-style task on several nodes (Azure's multiInstanceSettings)."""

    number_of_instances: int = 1
    coordination_command: str | None = None
    common_inputs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "number_of_instances",
                           v.integer(self.number_of_instances, "multi_instance.number_of_instances", minimum=1))
        if self.coordination_command is not None:
            object.__setattr__(self, "coordination_command",
                               _command(self.coordination_command, "multi_instance.coordination_command"))
        object.__setattr__(self, "common_inputs", _inputs(self.common_inputs, "multi_instance.common_inputs"))


@v.checked_keywords
@dataclass(frozen=True)
class StartTask:
    """A command run on every node as it joins, before any task.

    Azure's defaults: no retries, and the node waits for its success.

    >>> StartTask("pip install pillow").max_retries
    0
    """

    command: Any
    max_retries: int = 0
    wait_for_success: bool = True
    env: dict = field(default_factory=dict)
    inputs: tuple = ()
    max_wall_clock: Any = None

    def __post_init__(self):
        object.__setattr__(self, "command", _command(self.command, "start_task.command"))
        object.__setattr__(self, "max_retries", v.integer(self.max_retries, "start_task.max_retries", minimum=0))
        if not isinstance(self.wait_for_success, bool):
            raise SpecError("start_task.wait_for_success", self.wait_for_success, "expected True or False")
        object.__setattr__(self, "env", v.str_mapping(self.env, "start_task.env"))
        object.__setattr__(self, "inputs", _inputs(self.inputs, "start_task.inputs"))
        object.__setattr__(self, "max_wall_clock", v.duration(self.max_wall_clock, "start_task.max_wall_clock"))


@v.checked_keywords
@dataclass(frozen=True)
class AppPackage:
    """An application package: an archive unpacked once per node.

    Its folder is in ``AZ_BATCH_APP_PACKAGE_<name>_<version>``.
    """

    name: str
    version: str
    url: str

    def __post_init__(self):
        v.task_id(self.name.replace(".", "_") if isinstance(self.name, str) else self.name, "app_packages name")
        if not isinstance(self.version, str) or not self.version:
            raise SpecError("app_packages version", self.version, "expected a version string such as '6.1'")
        object.__setattr__(self, "url", _url(self.url, f"app_packages[{self.name!r}].url"))


@v.checked_keywords
@dataclass(frozen=True, eq=False)
class PythonCall:
    """A Python callable with its arguments, pickled (cloudpickle).

    Two calls are equal when the function's qualified name and the pickled
    arguments are equal: a re-run notebook (new kernel, new cell file names
    inside the pickled code) that submits the same function with the same
    arguments adds nothing new. Pass ``replace=True`` to run changed code.
    """

    name: str
    payload: bytes
    args_digest: str = ""

    def __post_init__(self):
        if isinstance(self.args_digest, (bytes, bytearray)):
            object.__setattr__(self, "args_digest", hashlib.sha256(self.args_digest).hexdigest())
        elif not self.args_digest:
            object.__setattr__(self, "args_digest", hashlib.sha256(self.payload).hexdigest())

    def __eq__(self, other):
        return isinstance(other, PythonCall) and other.name == self.name and other.args_digest == self.args_digest

    __hash__ = None


def _command(value: Any, field_name: str):
    if isinstance(value, str):
        if not value.strip():
            raise SpecError(field_name, value, "a command line may not be empty")
        return value
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(a, str) for a in value):
            raise SpecError(field_name, value, "an argv list must be non-empty and hold only strings")
        return tuple(value)
    raise SpecError(field_name, value, "expected a command line string (run by /bin/sh -c) or an argv list")


@v.checked_keywords
@dataclass(frozen=True)
class TaskSpec:
    """One task: a command line (``command``) or a Python call (``python``).

    >>> TaskSpec("b", ["python", "b.py"], depends_on=["a"]).depends_on
    ('a',)
    """

    id: str
    command: Any = None
    inputs: tuple = ()
    outputs: tuple = ()
    env: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    depends_on: tuple = ()
    max_wall_clock: Any = None
    retry: Retry | None = None
    required_slots: int = 1
    priority: int | None = None
    exit_conditions: Any = None
    multi_instance: MultiInstance | None = None
    retention_time: Any = None
    python: PythonCall | None = None
    upload_condition: str = "success"
    container: Container | None = None

    def __post_init__(self):
        # A million-task add makes a million of these: a field left at its default (most are)
        # skips its check, which that default would pass anyway.
        put = object.__setattr__
        put(self, "id", v.task_id(self.id))
        if (self.command is None) == (self.python is None):
            raise SpecError(f"task {self.id!r} command", self.command,
                            "give a command line, an argv list, or use job.submit() for a Python callable")
        if type(self.command) is not str or not self.command.strip():
            if self.command is not None:
                put(self, "command", _command(self.command, f"task {self.id!r} command"))
        if self.upload_condition != "success":
            put(self, "upload_condition", v.choice(self.upload_condition, "upload_condition", UPLOAD_CONDITIONS))
        if type(self.inputs) is not tuple or self.inputs:
            put(self, "inputs", _inputs(self.inputs, "inputs"))
        if type(self.outputs) is not tuple or self.outputs:
            put(self, "outputs", _outputs(self.outputs, self.upload_condition))
        if type(self.env) is not dict or self.env:
            put(self, "env", v.str_mapping(self.env, "env"))
        if type(self.secrets) is not dict or self.secrets:
            secrets = v.str_mapping(self.secrets, "secrets")
            for name, ref in secrets.items():
                _secret_ref(name, ref)
            put(self, "secrets", secrets)
        if type(self.depends_on) is tuple and not self.depends_on:
            put(self, "depends_on", _NO_DEPENDENCIES)
        else:
            deps = dependency_ids(self.depends_on)
            if self.id in deps:
                raise SpecError("depends_on", self.id, "a task cannot depend on itself")
            put(self, "depends_on", deps)
        if self.max_wall_clock is not None:
            put(self, "max_wall_clock", v.duration(self.max_wall_clock, "max_wall_clock"))
        if self.retention_time is not None:
            put(self, "retention_time", v.duration(self.retention_time, "retention_time"))
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise SpecError("retry", self.retry, "expected bnb.Retry(max=..., delay=..., backoff=...)")
        if type(self.required_slots) is not int or self.required_slots < 1:
            put(self, "required_slots", v.integer(self.required_slots, "required_slots", minimum=1))
        if self.priority is not None:
            put(self, "priority", v.integer(self.priority, "priority"))
            if not -1000 <= self.priority <= 1000:
                raise SpecError("priority", self.priority, "must be between -1000 and 1000 (Azure's range)")
        if self.exit_conditions is not None:
            put(self, "exit_conditions", ExitConditions.from_mapping(self.exit_conditions))
        if self.multi_instance is not None and not isinstance(self.multi_instance, MultiInstance):
            raise SpecError("multi_instance", self.multi_instance, "expected bnb.MultiInstance(...)")
        if self.python is not None and not isinstance(self.python, PythonCall):
            raise SpecError("python", self.python, "use job.submit(fn, ...) for a Python callable")
        if self.container is not None:
            put(self, "container", _container(self.container, f"task {self.id!r} container"))
            if self.python is not None:
                raise SpecError(f"task {self.id!r} container", self.container.image,
                                "runs command lines only; a Python callable runs on the node itself")

    def with_(self, **changes) -> "TaskSpec":
        return replace(self, **changes)


@v.checked_keywords
@dataclass(frozen=True)
class JobSpec:
    """A job: its options and, in a job file, its tasks.

    >>> JobSpec("thumbnails", max_task_retries=2).max_task_retries
    2
    """

    id: str
    max_task_retries: int = 0
    priority: int = 0
    max_wall_clock: Any = None
    on_all_tasks_complete: str = "noaction"
    budget: float | None = None
    budget_warn_fraction: float = 0.8
    tags: dict = field(default_factory=dict)
    pool: dict | None = None
    tasks: tuple = ()
    prep: JobPrep | None = None
    release: JobRelease | None = None

    def __post_init__(self):
        object.__setattr__(self, "id", v.task_id(self.id, "job id"))
        object.__setattr__(self, "max_task_retries", v.integer(self.max_task_retries, "max_task_retries", minimum=-1))
        object.__setattr__(self, "priority", v.integer(self.priority, "priority"))
        object.__setattr__(self, "max_wall_clock", v.duration(self.max_wall_clock, "max_wall_clock"))
        value = self.on_all_tasks_complete
        if isinstance(value, str):
            value = {"terminatejob": "terminate", "terminate_job": "terminate"}.get(value.lower(), value)
        object.__setattr__(self, "on_all_tasks_complete", v.choice(value, "on_all_tasks_complete", ALL_TASKS_COMPLETE))
        object.__setattr__(self, "budget", v.number(self.budget, "budget", minimum=0.0, allow_none=True))
        frac = v.number(self.budget_warn_fraction, "budget_warn_fraction", minimum=0.0)
        if frac > 1:
            raise SpecError("budget_warn_fraction", self.budget_warn_fraction, "must be a fraction between 0 and 1")
        object.__setattr__(self, "tags", v.str_mapping(self.tags, "tags"))
        if self.pool is not None and not isinstance(self.pool, Mapping):
            raise SpecError("pool", self.pool, "expected a mapping of pool options")
        tasks = tuple(self.tasks or ())
        if not all(isinstance(t, TaskSpec) for t in tasks):
            raise SpecError("tasks", tasks, "expected TaskSpec items")
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "prep", _prep_field(self.prep, JobPrep, "prep"))
        object.__setattr__(self, "release", _prep_field(self.release, JobRelease, "release"))
        if self.release is not None and self.prep is None:
            raise SpecError("release", self.release, "a job release task needs a preparation task (prep=), "
                                                     "as in Azure: it runs on the nodes that ran it")

    def default_retry(self) -> Retry:
        return Retry(max=self.max_task_retries)


@v.checked_keywords
@dataclass(frozen=True)
class PoolSpec:
    """A pool: where nodes come from, how many, and what each may run.

    >>> PoolSpec("local", dedicated=2, task_slots_per_node=2).total_slots
    4
    """

    name: str = "local"
    backend: str = "local"
    vm_size: str | None = None
    dedicated: int | None = None
    spot: int = 0
    autoscale: Any = None
    autoscale_interval: Any = 30.0
    task_slots_per_node: int = 1
    node_fill: str = "spread"
    start_task: StartTask | None = None
    app_packages: tuple = ()
    tags: dict = field(default_factory=dict)
    region: str | None = None
    options: dict = field(default_factory=dict)
    container_runtime: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "name", v.task_id(self.name, "pool name"))
        if not isinstance(self.backend, str) or not self.backend:
            raise SpecError("backend", self.backend, "expected a backend name such as 'local', 'azure' or 'address'")
        for name in ("vm_size", "region"):
            if getattr(self, name) is not None and (not isinstance(getattr(self, name), str) or not getattr(self, name)):
                raise SpecError(name, getattr(self, name), "expected a non-empty string")
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            raise SpecError("options", self.options, "expected a mapping of backend option names to values")
        object.__setattr__(self, "dedicated", v.integer(self.dedicated, "dedicated", minimum=0, allow_none=True))
        object.__setattr__(self, "spot", v.integer(self.spot, "spot", minimum=0))
        if self.autoscale is not None and not (isinstance(self.autoscale, str) or callable(self.autoscale)):
            raise SpecError("autoscale", self.autoscale, "expected an Azure autoscale formula string or a callable")
        object.__setattr__(self, "autoscale_interval",
                           v.duration(self.autoscale_interval, "autoscale_interval", allow_none=False))
        if self.autoscale_interval <= 0:
            raise SpecError("autoscale_interval", self.autoscale_interval, "must be positive")
        object.__setattr__(self, "task_slots_per_node",
                           v.integer(self.task_slots_per_node, "task_slots_per_node", minimum=1))
        if self.task_slots_per_node > 256:
            raise SpecError("task_slots_per_node", self.task_slots_per_node, "must be at most 256 (Azure's limit)")
        object.__setattr__(self, "node_fill", v.choice(self.node_fill, "node_fill", NODE_FILLS))
        if self.start_task is not None and not isinstance(self.start_task, StartTask):
            if isinstance(self.start_task, (str, list, tuple)):
                object.__setattr__(self, "start_task", StartTask(self.start_task))
            else:
                raise SpecError("start_task", self.start_task, "expected bnb.StartTask(command, ...)")
        pkgs = tuple(self.app_packages or ())
        if not all(isinstance(p, AppPackage) for p in pkgs):
            raise SpecError("app_packages", pkgs, "expected bnb.AppPackage(name, version, url) items")
        object.__setattr__(self, "app_packages", pkgs)
        object.__setattr__(self, "tags", v.str_mapping(self.tags, "tags"))
        object.__setattr__(self, "container_runtime", _container_runtime(self.container_runtime))

    @property
    def total_slots(self) -> int:
        return ((self.dedicated or 0) + self.spot) * self.task_slots_per_node


def _secret_ref(name: str, ref: str) -> None:
    if ref.startswith("env:") and len(ref) > 4:
        return
    if ref.startswith("file:") and ref[5:].startswith("/"):
        return
    vault, sep, secret = ref[len("keyvault://"):].partition("/")
    if ref.startswith("keyvault://") and vault and secret and "/" not in secret:
        return
    # What is no reference may be the secret itself: not echoed into a notebook or a log.
    shown = ref if ref.startswith(("env:", "file:", "keyvault:")) else "<hidden>"
    raise SpecError(f"secrets[{name!r}]", shown, "give a reference: 'env:NAME', 'file:/absolute/path' or "
                    "'keyvault://<vault>/<secret>', never the secret itself")
