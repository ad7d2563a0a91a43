"""The dispatcher's in-memory picture of a job and its tasks.

Rebuilt from the ledger when a job is attached in a new process, so it holds
nothing the ledger does not also hold.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .graph import DepGraph
from ..spec.model import JobSpec, Retry, TaskSpec
from ..states import LIVE_TASK_STATES, JobState, TaskState


#: the states of a task not yet ended
_LIVE = tuple(LIVE_TASK_STATES)


class TaskRun:
    __slots__ = ("key", "spec", "seq", "state", "n", "tries", "requeues", "unmet", "node", "exit_code",
                 "failure", "retry_at", "dispatched", "has_result", "losses", "queued")

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
        self.queued = None       # the key of the bundle it waits in behind a node's busy slots (queued.py)


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
    pace: float | None = None                           # its attempts' moving average, seconds
    changed: threading.Condition = field(default_factory=threading.Condition)

    @functools.cached_property
    def key(self) -> str:       # a job's id never changes; asked for a few times each task
        return self.spec.id.lower()

    @property
    def idle(self) -> bool:
        """No task left to run (the job may still accept more)."""
        return not any(map(self.counts.__getitem__, _LIVE))

    def retry_policy(self, spec: TaskSpec) -> Retry:
        return spec.retry if spec.retry is not None else self.spec.default_retry()

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


def now() -> float:
    return time.time()
