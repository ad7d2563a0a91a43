"""Azure's task reactivate, and reading a running attempt's output on its node.

:func:`reactivate` runs on the dispatcher's thread (``Dispatcher.call``), like
every job operation: a failed task's retry count is reset and it runs again,
the dependents it had blocked wait for it again, and a job that had
completed is active again. Azure allows it only on failed tasks; any other
state is refused with a :class:`~batchnb.errors.SpecError`.

>>> from batchnb.engine.reactivate import dependents_to_unblock
>>> from batchnb.engine.graph import DepGraph
>>> g = DepGraph(); g.add([("a", ()), ("b", ("a",)), ("c", ("b",))])
>>> dependents_to_unblock(g, "a", {"b": "blocked", "c": "blocked"}, {})
['b', 'c']
"""

from __future__ import annotations

import time
from pathlib import Path

from . import auditops
from ..errors import LeaseHeld, SpecError
from .events import JobStateChanged
from ..states import JobState, TaskState


def dependents_to_unblock(graph, key: str, states: dict, actions: dict) -> list[str]:
    """The blocked tasks downstream of ``key`` that no other failed dependency still blocks.

    ``states`` maps a task key to its state's value, ``actions`` a task key to its final
    dependency action (``key`` itself counts as not final any more).
    """
    freed: list[str] = []
    gone = {key}
    for k in graph.downstream(key):
        if states.get(k) != TaskState.BLOCKED.value:
            continue
        # Still blocked by a dependency that stays failed (not one freed here).
        if any(actions.get(d) == "block" and d not in gone for d in graph.deps.get(k, ())):
            continue
        freed.append(k)
        gone.add(k)
    return freed


@auditops.reactivate
def reactivate(disp, job, task_keys: list[str] | None, now: float | None = None) -> list[str]:
    """Reactivate failed tasks of ``job`` (all of them when ``task_keys`` is None); their ids.

    Runs on the dispatcher's thread. A named task that is not ``failed`` is
    refused (nothing changes); ``reactivate_failed`` of a job with no failed
    task returns ``[]``.
    """
    now = time.time() if now is None else now
    if disp.jobs.get(job.key) is not job:
        raise LeaseHeld(f"job {job.spec.id!r} is dispatched by another process (or none): reactivate it there")
    if task_keys is None:
        runs = [tr for tr in job.tasks.values() if tr.state == TaskState.FAILED]
    else:
        runs = []
        for key in task_keys:
            tr = job.tasks.get(key.lower())
            if tr is None:
                raise SpecError("task id", key, f"is not in job {job.spec.id!r}")
            if tr.state != TaskState.FAILED:
                raise SpecError("task", tr.spec.id, f"is {tr.state.value}: only a failed task can be reactivated "
                                "(as in Azure Batch); wait for it to end, or add a new task")
            runs.append(tr)
    if not runs:
        return []
    if job.state == JobState.TERMINATING:
        raise SpecError("job", job.spec.id, "is terminating: its tasks cannot be reactivated")
    if job.state == JobState.COMPLETED:
        if job.deadline is not None and job.deadline <= now:
            raise SpecError("job", job.spec.id, f"is past its max_wall_clock ({job.spec.max_wall_clock}s): "
                            "reactivated tasks would be cancelled at once; make a new job")
        _reopen(disp, job, now)
    for tr in runs:
        job.actions.pop(tr.key, None)
        states = {k: t.state.value for k, t in job.tasks.items()}
        for key in dependents_to_unblock(job.graph, tr.key, states, job.actions):
            dtr = job.tasks[key]
            job.actions.pop(key, None)
            dtr.unmet = sum(1 for d in job.graph.deps[key] if job.actions.get(d) != "satisfy")
            disp.set_state(job, dtr, TaskState.PENDING, now, reason=f"{tr.spec.id} reactivated",
                           failure=None, ended=None)
        tr.tries, tr.retry_at, tr.failure, tr.exit_code = 0, None, None, None
        disp.set_state(job, tr, TaskState.ACTIVE, now, reason="reactivated", failure=None, exit_code=None,
                       ended=None)
        disp.push_ready(job, tr)
    return [tr.spec.id for tr in runs]


def _reopen(disp, job, now: float) -> None:
    """A completed job is active again: its lease is taken back before anything is dispatched."""
    holder = disp.ledger.acquire_lease(job.spec.id, job.owner, disp.engine.lease_ttl, now=now)
    if holder is not None:
        raise LeaseHeld(f"job {job.spec.id!r} is held by {holder}; reactivate its tasks there")
    job.state, job.reason, job.ended = JobState.ACTIVE, None, None
    disp.batch.job(job.spec.id, state=job.state.value, reason=None, ended=None)
    disp.batch.event(now, "job", job.spec.id, None, job.state.value, {"reason": "reactivated"})
    disp.events.append(JobStateChanged(job.spec.id, job.state.value, now, "reactivated"))
    # Recorded before the lease renewal reads the job's state back (it would see 'completed').
    disp.flush()
    disp.at(now + min(disp.engine.lease_ttl / 3, 2.0), lambda: disp._renew_lease(job))


def read_tail(path: str, n: int) -> str | None:
    """The last ``n`` lines of a file, or None when it is not there (also run on a node)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024 * max(1, n // 50)))
            data = fh.read()
    except OSError:
        return None
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return "".join(lines[-n:]) if n > 0 else ""


def live_tail(disp, job_id: str, attempt: dict, name: str, n: int) -> str | None:
    """The tail of a running attempt's ``stdout.txt``/``stderr.txt`` on its node: read here when
    the node's folder is on this machine, else by a small call on its worker. None when unreachable."""
    from ..node.attempt import node_dirs
    node = attempt.get("node")
    if not node:
        return None
    path = str(node_dirs(disp.engine.node_root, node)["workitems"] / job_id / attempt["task_id"]
               / str(attempt["n"]) / name)
    if Path(path).exists():
        return read_tail(path, n)
    address = disp.call(lambda: getattr(disp.nodes.nodes.get(node), "address", None))
    if not address:
        return None
    try:
        return disp.client.run(read_tail, path, n, workers=[address], on_error="return").get(address)
    except Exception:  # noqa: BLE001 - the node went away meanwhile: the ledger's tail is what is left
        return None
