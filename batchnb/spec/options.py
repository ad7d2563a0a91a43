"""Which keyword goes where: ``pool.job()``'s options, and ``submit()``/``map()``'s
task options beside the function's own keywords.

A misspelt keyword is a :class:`~batchnb.SpecError` naming it and the
option it most likely means, at the call, never a ``TypeError`` from a
dataclass or a task that fails on its node.

>>> def resize(path, width=256): ...
>>> task_options(resize, {"width": 128, "retry": None}, "job.submit()")
{'retry': None}
>>> task_options(resize, {"max_wallclock": "1m"}, "job.submit()")
Traceback (most recent call last):
...
batchnb.SpecError: max_wallclock: '1m' is invalid: not a task option of job.submit(); did you mean 'max_wall_clock'? (resize() takes no 'max_wallclock' either)
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Callable

from .model import JobSpec
from .validate import did_you_mean, unknown_keyword
from ..errors import SpecError

#: Keyword arguments of submit()/map() that configure the task rather than go to the function.
TASK_OPTIONS = ("task_id", "depends_on", "retry", "max_wall_clock", "priority", "required_slots", "inputs",
                "outputs", "upload_condition", "exit_conditions", "env", "secrets", "replace", "retention_time")
#: What pool.job() takes: the job's options (a job file's 'pool' too: Job.attach passes it back).
JOB_OPTIONS = tuple(f.name for f in dataclasses.fields(JobSpec) if f.name not in ("id", "tasks"))
#: Options given as None that mean "none" and are dropped, so that ``pool.job(id, prep=None)`` re-attaches.
NONE_MEANS_DEFAULT = ("prep", "release")


def job_options(options: dict) -> dict:
    """``pool.job()``'s keyword arguments, checked; ``prep=None``/``release=None`` (the defaults) dropped."""
    for name, value in options.items():
        if name not in JOB_OPTIONS:
            raise unknown_keyword("pool.job()", name, value, JOB_OPTIONS)
    return {k: v for k, v in options.items() if not (k in NONE_MEANS_DEFAULT and v is None)}


def _shown(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def fn_name(fn: Callable) -> str:
    """``fn``'s name as a task id's stem."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", _shown(fn))[:40] or "call"


def _parameters(fn: Callable) -> set[str] | None:
    """The keywords ``fn`` takes; None when it takes any (``**kwargs``) or cannot be told."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):     # some builtins have no signature
        return None
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def task_options(fn: Callable, kwargs: dict, call: str, extra: tuple = ()) -> dict:
    """Take the task options out of ``kwargs``; what is left goes to ``fn``.

    A keyword ``fn`` cannot take would fail the task on its node with a
    TypeError; it is refused now, with the task option it most likely
    misspells. A keyword ``fn`` does take (a parameter of its own, or any
    through ``**kwargs``) goes to ``fn`` even when it looks like a task
    option: the function's own ``max_wallclock=`` must reach it, and only
    the user knows which was meant.
    """
    opts = {k: kwargs.pop(k) for k in TASK_OPTIONS if k in kwargs}
    params = _parameters(fn)
    for name, value in kwargs.items():
        if params is None or name in params:
            continue
        if name == "container":
            raise SpecError(name, value, f"runs a command line in an image; {call} runs a Python callable on the "
                                         "node itself: use job.add_task(id, command, container=...)")
        near = did_you_mean(name, TASK_OPTIONS + extra)
        if near:
            raise unknown_keyword(call, name, value, TASK_OPTIONS + extra, kind="task option",
                                  hint=f"did you mean {near!r}? ({_shown(fn)}() takes no {name!r} either)")
        raise SpecError(name, value, f"{_shown(fn)}() takes no keyword {name!r} (it takes "
                                     f"{', '.join(sorted(params)) or 'none'}); the task options of {call} are "
                                     + ", ".join(TASK_OPTIONS + extra))
    return opts


def unpicklable(task_id: str, fn: Callable, args: tuple, kwargs: dict, exc: Exception) -> SpecError:
    """The SpecError naming what cannot be pickled: an argument (by its parameter name) or the function."""
    import cloudpickle
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    named: list[tuple[str, Any]] = [(names[i] if i < len(names) else f"args[{i}]", a) for i, a in enumerate(args)]
    for where, value in [*named, *kwargs.items()]:
        try:
            cloudpickle.dumps(value)
        except Exception as err:  # noqa: BLE001 - any pickling failure names this argument
            return SpecError(f"task {task_id!r} argument {where!r}", value, f"cannot be pickled: {err}")
    return SpecError(f"task {task_id!r} function", fn, f"cannot be pickled: {exc}")
