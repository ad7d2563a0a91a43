"""Retries and exit conditions: what a task's failure means (Azure Batch's exitConditions).

Part of :mod:`batchnb.spec`, which re-exports the public names.

>>> Retry(max=3, delay="1s", backoff=2.0, jitter=0).delay_before(3)
4.0
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping

from . import validate as v
from ..errors import SpecError

JOB_ACTIONS = ("none", "terminate", "disable")
DEPENDENCY_ACTIONS = ("satisfy", "block")


@v.checked_keywords
@dataclass(frozen=True)
class Retry:
    """How often and how soon a failed task runs again.

    Attempt ``n`` (1-based) that failed waits ``min(max_delay, delay *
    backoff**(n-1))`` seconds, spread by +/- ``jitter`` (a fraction), before
    the next; no slot is held while it waits.

    >>> Retry(max=3, delay="1s", backoff=2.0).delay_before(3, rng=lambda: 0.5)
    4.0
    """

    max: int = 0
    delay: Any = 0.0
    backoff: float = 2.0
    max_delay: Any = 300.0
    jitter: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "max", v.integer(self.max, "retry.max", minimum=-1))
        object.__setattr__(self, "delay", v.duration(self.delay, "retry.delay", allow_none=False))
        object.__setattr__(self, "backoff", v.number(self.backoff, "retry.backoff", minimum=1.0))
        object.__setattr__(self, "max_delay", v.duration(self.max_delay, "retry.max_delay", allow_none=False))
        jitter = v.number(self.jitter, "retry.jitter", minimum=0.0)
        if jitter >= 1:
            raise SpecError("retry.jitter", self.jitter, "must be a fraction below 1")
        object.__setattr__(self, "jitter", jitter)

    def allows(self, attempts_done: int) -> bool:
        """True when a task that has run ``attempts_done`` times may run again (max=-1: unlimited)."""
        return self.max < 0 or attempts_done <= self.max

    def delay_before(self, attempt: int, rng=random.random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        # The exponent is capped: with unlimited retries 2.0**1025 would overflow.
        base = min(self.max_delay, self.delay * self.backoff ** min(max(0, attempt - 1), 64))
        return max(0.0, base * (1 + self.jitter * (2 * rng() - 1)))


@v.checked_keywords
@dataclass(frozen=True)
class ExitOptions:
    """What an exit code means for the job and the task's dependents (Azure's exitOptions).

    ``dependency_action`` None means Azure's default: satisfy for exit code 0,
    block otherwise. ``job_action`` is ``"none"`` or ``"terminate"`` (the job
    ends with reason ``task_failed``); Azure's ``"disable"`` is accepted and,
    as batchnb has no disabled jobs yet, also terminates the job.

    >>> ExitOptions(dependency_action="satisfy").job_action
    'none'
    """

    job_action: str = "none"
    dependency_action: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "job_action", v.choice(self.job_action, "job_action", JOB_ACTIONS))
        if self.dependency_action is not None:
            object.__setattr__(self, "dependency_action",
                               v.choice(self.dependency_action, "dependency_action", DEPENDENCY_ACTIONS))


@v.checked_keywords
@dataclass(frozen=True)
class ExitConditions:
    """Exit options per exit code, range of codes, failure category and default.

    Made from the user's mapping by :meth:`from_mapping`:
    ``{3: ExitOptions(...), range(10, 20): ..., "default": ...,
    "pre_processing_error": ..., "file_upload_error": ...}``.
    """

    codes: tuple = ()            # ((code, ExitOptions), ...)
    ranges: tuple = ()           # (((start, end_inclusive), ExitOptions), ...)
    default: ExitOptions | None = None
    pre_processing_error: ExitOptions | None = None
    file_upload_error: ExitOptions | None = None

    @classmethod
    def from_mapping(cls, mapping: Any) -> "ExitConditions | None":
        if mapping is None or isinstance(mapping, ExitConditions):
            return mapping
        if not isinstance(mapping, Mapping):
            raise SpecError("exit_conditions", mapping, "expected a mapping of exit code, range or 'default' to ExitOptions")
        codes, ranges, named = [], [], {}
        for key, opts in mapping.items():
            if isinstance(opts, Mapping):
                unknown = [k for k in opts if k not in ("job_action", "dependency_action")]
                if unknown:
                    raise v.unknown_keyword("ExitOptions", unknown[0], opts[unknown[0]],
                                            ("job_action", "dependency_action"), kind="field")
                opts = ExitOptions(**opts)
            if not isinstance(opts, ExitOptions):
                raise SpecError(f"exit_conditions[{key!r}]", opts, "expected bnb.ExitOptions")
            if isinstance(key, bool):
                raise SpecError("exit_conditions key", key, "expected an int, a range, or a name")
            if isinstance(key, int):
                codes.append((key, opts))
            elif isinstance(key, range):
                if key.step != 1 or len(key) == 0:
                    raise SpecError("exit_conditions key", key, "a range must be non-empty with step 1")
                ranges.append(((key.start, key.stop - 1), opts))
            elif isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, int) for k in key):
                if key[1] < key[0]:
                    raise SpecError("exit_conditions key", key, "a range (start, end) needs end >= start")
                ranges.append(((key[0], key[1]), opts))
            elif key in ("default", "pre_processing_error", "file_upload_error"):
                named[key] = opts
            else:
                raise SpecError("exit_conditions key", key,
                                "expected an exit code, a range, 'default', 'pre_processing_error' or 'file_upload_error'")
        return cls(tuple(codes), tuple(ranges), **named)

    def options_for(self, exit_code: int | None, category: str | None = None) -> ExitOptions | None:
        """The options that apply; None when nothing matches (Azure's defaults then).

        As in Azure Batch, a match on the exit code or a range of codes takes
        precedence over the pre-processing and file-upload options.
        """
        if exit_code is not None:
            for code, opts in self.codes:
                if code == exit_code:
                    return opts
            for (lo, hi), opts in self.ranges:
                if lo <= exit_code <= hi:
                    return opts
        if category == "preprocessing" and self.pre_processing_error:
            return self.pre_processing_error
        if category == "upload" and self.file_upload_error:
            return self.file_upload_error
        return self.default if exit_code != 0 or category else None
