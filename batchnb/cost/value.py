"""The :class:`Cost` value and its views (table, grouping by tag, HTML).

Private module; ``Cost`` is re-exported by :mod:`batchnb.cost`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError

# Fixed columns of Cost.frame(); tag keys must not shadow them.
TASK_COLUMNS = ("job_id", "task_id", "attempts", "seconds", "slot_seconds", "node_seconds",
                "dedicated", "spot", "cost")
JOB_COLUMNS = ("job_id", "tasks", "attempts", "seconds", "slot_seconds", "node_seconds",
               "dedicated", "spot", "cost")
IDLE = "(idle)"
#: The pool's scheduler VM (a remote pool's): a line of the pool's cost of its own.
SCHEDULER = "scheduler"


@dataclass(frozen=True)
class Cost:
    """What a pool or a job has cost up to ``at``, in ``currency``.

    Nodes bill from request to release, as the cloud bills. A task pays for
    the slot-seconds it held at its node's price per slot-second (node
    price / slots of the node); a job pays the sum of its tasks.

    Attributes
    ----------
    total
        Pool: every node's billed time times its price. Job: its tasks' sum.
    by_group
        ``total`` split into ``"dedicated"`` and ``"spot"``, and, for a pool
        whose scheduler runs on a VM of its own (Azure), ``"scheduler"``.
    node_seconds
        Billed node-seconds per group (for a job: the node-equivalent seconds
        its tasks held, slot-seconds / slots of the node).
    busy, idle
        Node cost held by tasks and the rest of the nodes' cost
        (``busy + idle + by_group.get("scheduler", 0) == total``); a job's
        ``idle`` is 0: idle nodes and the scheduler belong to the pool.
    by_job
        ``{job_id: cost}``.
    by_task
        ``{task_id: cost}`` of a job (empty for a pool: ask the job).
    rate_per_hour
        The burn at ``at``: nodes up (pool) or slots held (job), per hour.
    tags
        The pool's tags, with the job's on top for a job.

    >>> c = Cost(total=3.0, currency="USD", by_group={"dedicated": 2.0, "spot": 1.0}, busy=2.5, idle=0.5)
    >>> c
    Cost(total=3 USD, dedicated=2, spot=1, idle=0.5, rate=0 USD/h)
    >>> c.by_tag("team")
    {'(idle)': 0.5}
    """

    total: float
    currency: str = "USD"
    by_group: dict[str, float] = field(default_factory=lambda: {"dedicated": 0.0, "spot": 0.0})
    node_seconds: dict[str, float] = field(default_factory=lambda: {"dedicated": 0.0, "spot": 0.0})
    busy: float = 0.0
    idle: float = 0.0
    by_job: dict[str, float] = field(default_factory=dict)
    by_task: dict[Any, float] = field(default_factory=dict)
    rate_per_hour: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None
    at: float | None = None
    # One dict per task (job scope) or per job (pool scope), tags included.
    rows: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def frame(self) -> Any:
        """A pandas DataFrame: one row per task (job) or per job (pool), then one column per tag."""
        import pandas as pd

        fixed = TASK_COLUMNS if self.job_id is not None else JOB_COLUMNS
        tag_keys = sorted({k for row in self.rows for k in row} - set(fixed))
        return pd.DataFrame(list(self.rows), columns=[*fixed, *tag_keys])

    def by_tag(self, key: str) -> dict[Any, float]:
        """Cost grouped by the value of tag ``key``: ``{value: amount}``.

        Rows without the tag fall under ``None``. At pool scope the idle
        cost stands apart under ``"(idle)"`` and a scheduler VM's under
        ``"(scheduler)"``, so the values add up to ``total``.
        """
        out: dict[Any, float] = {}
        for row in self.rows:
            value = row.get(key)
            out[value] = out.get(value, 0.0) + row["cost"]
        if self.job_id is None and self.idle:
            out[IDLE] = self.idle
        if self.job_id is None and self.by_group.get(SCHEDULER):
            out[f"({SCHEDULER})"] = self.by_group[SCHEDULER]
        return out

    def __repr__(self) -> str:
        scope = f"job={self.job_id!r}, " if self.job_id is not None else ""
        sched = f"scheduler={self.by_group[SCHEDULER]:.6g}, " if SCHEDULER in self.by_group else ""
        return (f"Cost({scope}total={self.total:.6g} {self.currency}, dedicated={self.by_group.get('dedicated', 0):.6g}, "
                f"spot={self.by_group.get('spot', 0):.6g}, {sched}idle={self.idle:.6g}, "
                f"rate={self.rate_per_hour:.6g} {self.currency}/h)")

    def _repr_html_(self) -> str:
        cur = html.escape(self.currency)
        head = f"job {html.escape(self.job_id)}" if self.job_id is not None else "pool"
        lines = [("total", self.total), ("dedicated", self.by_group.get("dedicated", 0.0)),
                 ("spot", self.by_group.get("spot", 0.0)), ("held by tasks", self.busy), ("idle", self.idle)]
        if SCHEDULER in self.by_group:
            lines.insert(3, ("scheduler VM", self.by_group[SCHEDULER]))
        body = "".join(f"<tr><td>{name}</td><td style='text-align:right'>{value:,.4f} {cur}</td></tr>"
                       for name, value in lines)
        body += f"<tr><td>burn rate</td><td style='text-align:right'>{self.rate_per_hour:,.4f} {cur}/h</td></tr>"
        if self.tags:
            shown = ", ".join(f"{html.escape(k)}={html.escape(v)}" for k, v in sorted(self.tags.items()))
            body += f"<tr><td>tags</td><td>{shown}</td></tr>"
        return f"<table class='batchnb-cost'><caption>cost of {head}</caption>{body}</table>"


def merge(before: Cost, after: Cost) -> Cost:
    """One job's cost from two stretches of metering (a resumed job: earlier processes + this one)."""
    by_task = dict(before.by_task)
    for k, v in after.by_task.items():
        by_task[k] = by_task.get(k, 0.0) + v
    rows: dict = {r["task_id"]: dict(r) for r in before.rows}
    for r in after.rows:
        old = rows.get(r["task_id"])
        if old is None:
            rows[r["task_id"]] = dict(r)
        else:
            for k in ("attempts", "seconds", "slot_seconds", "node_seconds", "dedicated", "spot", "cost"):
                old[k] += r[k]
    add = lambda a, b: {k: a.get(k, 0.0) + b.get(k, 0.0) for k in ("dedicated", "spot")}  # noqa: E731
    total = before.total + after.total
    return Cost(total=total, currency=after.currency, by_group=add(before.by_group, after.by_group),
                node_seconds=add(before.node_seconds, after.node_seconds), busy=total, idle=0.0,
                by_job={after.job_id: total}, by_task=by_task, rate_per_hour=after.rate_per_hour,
                tags=after.tags, job_id=after.job_id, at=after.at, rows=tuple(rows.values()))


_RESERVED = sorted({*TASK_COLUMNS, *JOB_COLUMNS})  # tags become columns of Cost.frame()


def check_tags(field: str, tags: Mapping[str, str] | None) -> dict[str, str]:
    """The tags of a pool or job, checked: string names that are not Cost.frame()'s own columns."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise SpecError(field, tags, "expected a mapping of tag names to values, e.g. {'team': 'vision'}")
    for key, value in tags.items():
        if not isinstance(key, str) or not key or key in _RESERVED:
            raise SpecError(field, key, f"a tag name must be a non-empty string other than {', '.join(_RESERVED)}")
        if not isinstance(value, str):
            raise SpecError(f"{field}[{key!r}]", value, "a tag value must be a string")
    return dict(tags)
