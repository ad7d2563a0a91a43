"""The job a schedule's builder function fills: ``add_task``, ``add_tasks``, ``submit`` and ``map``.

A builder (``pool.schedule(name, build, every="1d")`` with ``def build(job):
...``) runs in the process that runs the schedule (the kernel, or a
detached pool's agent) each time a run comes due. It gets a
:class:`JobDraft`, which takes the calls a :class:`bnb.Job <batchnb.Job>`
takes and collects the tasks; the run's job is made with all of them at
once, so a builder that raises half-way makes no job.

>>> draft = JobDraft("nightly-job-1")
>>> a = draft.add_task("fetch", "echo fetched")
>>> b = draft.submit(len, a)                       # a task in the arguments: a dependency
>>> [(t.id, t.depends_on.items()) for t in draft.tasks]
[('fetch', ()), ('len-0', ('fetch',))]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import spec as specs
from ..errors import SpecError
from ..node import pycall
from ..spec.options import fn_name, task_options


class DraftTask:
    """A task added to a :class:`JobDraft`: its id, for dependencies and as a Python task's argument."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: str):
        self.task_id = task_id

    def __repr__(self) -> str:
        return f"<scheduled task {self.task_id!r}>"


class JobDraft:
    """The tasks of one scheduled run's job, as its builder adds them (``id`` is the job's id)."""

    def __init__(self, job_id: str):
        self.id = job_id
        self.tasks: list[specs.TaskSpec] = []
        self._ids: set[str] = set()
        self._auto: dict[str, itertools.count] = {}

    def add_task(self, task_id: str | int, command: str | Sequence[str] | None = None, **options: Any) -> DraftTask:
        """Add one command-line task (a string runs under /bin/sh -c, a list as argv)."""
        return self.add_tasks([specs.TaskSpec(task_id, command, **options)])[0]

    def add_tasks(self, tasks: Iterable[specs.TaskSpec | Mapping[str, Any]]) -> list[DraftTask]:
        """Add many tasks (TaskSpecs or dicts)."""
        out = []
        for t in tasks:
            spec = t if isinstance(t, specs.TaskSpec) else specs.from_dict(specs.TaskSpec, t)
            if spec.id.lower() in self._ids:
                raise SpecError("task id", spec.id, f"added twice to the scheduled job {self.id!r}")
            self._ids.add(spec.id.lower())
            self.tasks.append(spec)
            out.append(DraftTask(spec.id))
        return out

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> DraftTask:
        """Run ``fn(*args, **kwargs)`` as a task; tasks in the arguments become dependencies and
        are replaced by their results (as :meth:`bnb.Job.submit <batchnb.Job.submit>`)."""
        if not callable(fn):
            raise SpecError("fn", fn, "expected a callable")
        opts = task_options(fn, kwargs, "job.submit()")
        return self.add_tasks([self._python_spec(fn, args, kwargs, opts)])[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> list[DraftTask]:
        """One task per item (as ``map``)."""
        if not callable(fn):
            raise SpecError("fn", fn, "expected a callable")
        prefix = kwargs.pop("task_prefix", None)
        opts = task_options(fn, kwargs, "job.map()", extra=("task_prefix",))
        made = []
        for i, args in enumerate(zip(*iterables)):
            o = dict(opts)
            if prefix:
                o["task_id"] = f"{prefix}{i}"
            made.append(self._python_spec(fn, args, dict(kwargs), o))
        return self.add_tasks(made)

    def _python_spec(self, fn, args, kwargs, opts) -> specs.TaskSpec:
        opts = dict(opts)
        opts.pop("replace", None)
        name = fn_name(fn)
        task_id = opts.pop("task_id", None)
        if task_id is None:
            task_id = f"{name}-{next(self._auto.setdefault(name, itertools.count()))}"
        return pycall.python_task_spec(task_id, name, fn, args, kwargs, opts,
                                       lambda x: isinstance(x, DraftTask))
