"""Alert rules: what batch operators watch, as pure decisions.

A rule looks at :class:`Facts` (what the engine saw, gathered by the pool's
alerts extension, :mod:`batchnb.extensions.alerts`) and says why it fires, or
``None`` when all is well; :class:`AlertState` turns a rule's answers into
firings and resolutions. Nothing here does I/O or knows of Dask, so each rule
is tested with a hand-made :class:`Facts` (as distributed's ``adaptive_core``
keeps the scaling decision apart from the scheduler).

>>> import batchnb as bnb
>>> rule = bnb.alerts.failure_rate(above=0.2, window="5m")
>>> rule.check(Facts(now=100.0, ends=((90.0, False), (95.0, True))))
'1 of 2 attempts failed (50%) in the last 300s, above 20%'
>>> rule.check(Facts(now=100.0, ends=((90.0, True),))) is None
True
>>> bnb.alerts.queue_wait(above=-1)
Traceback (most recent call last):
...
batchnb.SpecError: queue_wait.above: -1 is invalid: a duration must be finite and not negative
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .errors import SpecError
from .spec.validate import duration

__all__ = ["Facts", "Rule", "AlertState", "failure_rate", "no_progress", "node_unusable", "budget_used",
           "queue_wait", "rule_from_dict"]


@dataclass(frozen=True)
class Facts:
    """What the engine saw, as of ``now``.

    ``ends``: ``(time, succeeded)`` of attempts that ended recently (a
    requeue after a lost node is not an end); ``progress``: job id -> the
    last time a task of that live job ended (or the job got tasks);
    ``unusable``: ids of the nodes unusable now; ``budget_used``: job id ->
    spent / budget; ``queue_wait``: job id -> seconds its longest-waiting
    ready task has waited.
    """

    now: float
    ends: tuple = ()
    progress: dict = field(default_factory=dict)
    unusable: tuple = ()
    budget_used: dict = field(default_factory=dict)
    queue_wait: dict = field(default_factory=dict)


def _positive(value, name: str, *, fraction: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(name, value, "expected a number" + (" between 0 and 1" if fraction else ""))
    if value < 0 or (fraction and value >= 1):
        raise SpecError(name, value, "expected a fraction from 0 up to (not including) 1" if fraction
                        else "must not be negative")
    return float(value)


def _window(value, name: str) -> float:
    seconds = duration(value, name, allow_none=False)
    if seconds <= 0:
        raise SpecError(name, value, "must be longer than 0 seconds, e.g. '5m'")
    return seconds


class Rule:
    """Base of the rules: ``check(facts)`` returns why it fires, or None."""

    kind = ""

    def check(self, facts: Facts) -> str | None:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in asdict(self).items())
        return f"{self.kind}({args})"


@dataclass(frozen=True)
class FailureRate(Rule):
    above: float = 0.2
    window: float = 300.0
    min_attempts: int = 1
    kind = "failure_rate"

    def check(self, facts: Facts) -> str | None:
        recent = [ok for t, ok in facts.ends if t > facts.now - self.window]
        failed = sum(1 for ok in recent if not ok)
        if len(recent) < self.min_attempts or not recent or failed / len(recent) <= self.above:
            return None
        return (f"{failed} of {len(recent)} attempts failed ({failed / len(recent):.0%}) in the last "
                f"{self.window:g}s, above {self.above:.0%}")


@dataclass(frozen=True)
class NoProgress(Rule):
    for_: float = 600.0
    job: str | None = None
    kind = "no_progress"

    def check(self, facts: Facts) -> str | None:
        stuck = sorted(j for j, t in facts.progress.items()
                       if (self.job is None or j.lower() == self.job.lower()) and facts.now - t >= self.for_)
        if not stuck:
            return None
        return f"no task of job {', '.join(stuck)} ended in {self.for_:g}s"


@dataclass(frozen=True)
class NodeUnusable(Rule):
    kind = "node_unusable"

    def check(self, facts: Facts) -> str | None:
        return f"node {', '.join(sorted(facts.unusable))} unusable" if facts.unusable else None


@dataclass(frozen=True)
class BudgetUsed(Rule):
    above: float = 0.8
    kind = "budget_used"

    def check(self, facts: Facts) -> str | None:
        over = sorted((j, r) for j, r in facts.budget_used.items() if r >= self.above)
        if not over:
            return None
        return "; ".join(f"job {j} used {r:.0%} of its budget" for j, r in over) + f" (alert at {self.above:.0%})"


@dataclass(frozen=True)
class QueueWait(Rule):
    above: float = 300.0
    kind = "queue_wait"

    def check(self, facts: Facts) -> str | None:
        over = sorted((j, w) for j, w in facts.queue_wait.items() if w > self.above)
        if not over:
            return None
        return "; ".join(f"a ready task of job {j} waited {w:.0f}s" for j, w in over) + f" (over {self.above:g}s)"


def failure_rate(above: float = 0.2, window="5m", min_attempts: int = 1) -> FailureRate:
    """Fires while more than ``above`` of the attempts that ended in the last ``window`` failed."""
    if isinstance(min_attempts, bool) or not isinstance(min_attempts, int) or min_attempts < 1:
        raise SpecError("failure_rate.min_attempts", min_attempts, "expected a whole number of at least 1")
    return FailureRate(_positive(above, "failure_rate.above", fraction=True),
                       _window(window, "failure_rate.window"), min_attempts)


def no_progress(for_="10m", job: str | None = None) -> NoProgress:
    """Fires while a job with tasks left (``job``, or any) has had no task end for ``for_``."""
    if job is not None and not isinstance(job, str):
        raise SpecError("no_progress.job", job, "expected a job id or None")
    return NoProgress(_window(for_, "no_progress.for_"), job)


def node_unusable() -> NodeUnusable:
    """Fires while a node of the pool is unusable."""
    return NodeUnusable()


def budget_used(above: float = 0.8) -> BudgetUsed:
    """Fires while a budgeted job has spent ``above`` (a fraction) of its budget or more."""
    value = _positive(above, "budget_used.above")
    if value == 0:
        raise SpecError("budget_used.above", above, "expected a fraction above 0, e.g. 0.8")
    return BudgetUsed(value)


def queue_wait(above="5m") -> QueueWait:
    """Fires while a ready task has waited longer than ``above`` for a slot."""
    return QueueWait(duration(above, "queue_wait.above", allow_none=False))


_KINDS = {cls.kind: cls for cls in (FailureRate, NoProgress, NodeUnusable, BudgetUsed, QueueWait)}


def rule_from_dict(data: dict) -> Rule:
    """The rule :meth:`Rule.to_dict` wrote (as the ledger keeps it)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in _KINDS:
        raise SpecError("alert rule", kind, f"expected one of {sorted(_KINDS)}")
    return _KINDS[kind](**data)


@dataclass
class AlertState:
    """One named alert: its rule, ``state`` (ok | firing), when it last changed and why."""

    name: str
    rule: Rule
    state: str = "ok"
    since: float | None = None
    detail: str | None = None

    def step(self, facts: Facts) -> str | None:
        """Evaluate once: ``"firing"`` or ``"resolved"`` when the state changes, else None."""
        why = self.rule.check(facts)
        if why is not None and self.state == "ok":
            self.state, self.since, self.detail = "firing", facts.now, why
            return "firing"
        if why is None and self.state == "firing":
            self.state, self.since, self.detail = "ok", facts.now, None
            return "resolved"
        if why is not None:
            self.detail = why
        return None
