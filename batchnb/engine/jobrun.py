"""The dispatcher's in-memory picture of a job and its tasks.

Rebuilt from the ledger when a job is attached in a new process, so it holds
nothing the ledger does not also hold.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .graph import DepGraph
from ..spec.model import JobSpec, Retry, TaskSpec
from ..states import TERMINAL_TASK_STATES, JobState, TaskState


class TaskRun:
    __slots__ = ("key", "spec", "seq", "state", "n", "tries", "requeues", "unmet", "node", "exit_code",
                 "failure", "retry_at", "dispatched", "has_result", "losses")

    def __init__(self, spec: TaskSpec, seq: int, state: TaskState):
        self.key = spec.id.lower()
        self.spec = spec
        self.seq = seq
        self.state = state
        self.n = 0               # number of the last attempt (requeued ones included)
        self.tries = 0           # attempts that count against retries
        self.requeues = 0
        self.unmet = 0           # dependencies not yet satisfied
        self.node = None
        self.exit_code = None
        self.failure = None
        self.retry_at = None     # set while waiting out a retry delay
        self.dispatched = None
        self.has_result = False
        self.losses = 0          # requeues whose cause may be the task itself (worker crash)


@dataclass
class JobRun:
    spec: JobSpec
    pool: str
    created: float
    state: JobState = JobState.ACTIVE
    reason: str | None = None
    ended: float | None = None
    tasks: dict = field(default_factory=dict)            # key -> TaskRun
    graph: DepGraph = field(default_factory=DepGraph)
    counts: Counter = field(default_factory=Counter)
    next_seq: int = 0
    deadline: float | None = None
    budget_warned: bool = False
    owner: str = ""                                     # the lease holder: this process
    adopted: float = 0.0                                # when this process took the job on
    actions: dict = field(default_factory=dict)          # key -> 'satisfy' | 'block', once final
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def key(self) -> str:
        return self.spec.id.lower()

    @property
    def idle(self) -> bool:
        """No task left to run (the job may still accept more)."""
        return sum(self.counts[s] for s in TaskState if s not in TERMINAL_TASK_STATES) == 0

    def retry_policy(self, spec: TaskSpec) -> Retry:
        return spec.retry if spec.retry is not None else self.spec.default_retry()

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


@dataclass
class JobResult:
    """What ``job.wait()`` returns: counts by state, failures, cost, wall time and why it ended.

    >>> r = JobResult("j", "completed", "all_tasks_complete", {"succeeded": 3}, [], 1.5)
    >>> r.ok
    True
    """

    job_id: str
    state: str
    reason: str | None
    counts: dict
    failures: list
    wall_time: float
    cost: object = None
    results: dict | None = None

    @property
    def ok(self) -> bool:
        bad = sum(self.counts.get(s, 0) for s in ("failed", "blocked", "cancelled"))
        return bad == 0 and self.reason in ("all_tasks_complete", None)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        text = f"job {self.job_id}: {self.reason or self.state} in {self.wall_time:.1f}s ({parts or 'no tasks'})"
        total = getattr(self.cost, "total", None)
        if total:  # an unpriced pool (no vm_size) has nothing to say here
            text += f", cost {total:.4g} {getattr(self.cost, 'currency', '')}".rstrip()
        for f in self.failures[:10]:
            text += f"\n  {f['task_id']}: {f['state']}" + (f" exit {f['exit_code']}" if f.get("exit_code") is not None else "") \
                + (f" — {f['message']}" if f.get("message") else "")
        return text

    def _repr_html_(self) -> str:
        from ..ui.snapshot import job_result_html
        return job_result_html(self)


def now() -> float:
    return time.time()
