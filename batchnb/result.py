"""``JobResult``: what ``job.wait()`` returns, a plain record of how the job ended."""

from __future__ import annotations

from dataclasses import dataclass

from ._display import drawer
from .states import UNSUCCESSFUL_TASK_STATES


@dataclass
class JobResult:
    """What ``job.wait()`` returns: counts by state, failures, cost, wall time and why it ended.

    ``state`` is the job's state word (:class:`batchnb.JobState`), the one
    ``job.state``, the views and ``batchnb jobs`` show. A job made with
    ``on_all_tasks_complete="noaction"`` (Azure's default) stays ``active``
    after its tasks ended, as in Azure: that its tasks all ended is the fact
    ``all_tasks_complete``, beside the state. ``cost`` is the job's
    :class:`batchnb.Cost` totals; its row per task is ``job.cost()``'s.

    >>> r = JobResult("j", "completed", "all_tasks_complete", {"succeeded": 3}, [], 1.5, all_tasks_complete=True)
    >>> r.ok, r.state, r.all_tasks_complete
    (True, 'completed', True)
    """

    job_id: str
    state: str
    reason: str | None
    counts: dict
    failures: list
    wall_time: float
    cost: object = None
    results: dict | None = None
    #: No task of the job is pending, active or running (true of a job with no tasks, as in Azure).
    all_tasks_complete: bool = False

    @property
    def ok(self) -> bool:
        bad = sum(self.counts.get(s.value, 0) for s in UNSUCCESSFUL_TASK_STATES)
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
        return drawer("job_result_html")(self)
