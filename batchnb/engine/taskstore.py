"""Which tasks the dispatcher holds in memory, and the rest paged in from the ledger.

A task that merely waits (active, with no dependencies, no dependents and the
default priority) is not held: its row in the ledger is all there is of it.
The dispatcher pages such tasks in, in the order they were added, as its
ready queue runs low (:meth:`TaskPaging.page_in`), so at most a window of
them is in memory; a task that succeeded and that nothing depends on is let
go once its outcome is recorded. A job of a million tasks then costs the
driver its running tasks, a window of ready ones, and those in its
dependency graph.

A mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`, on its thread.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from . import auditops
from .arrays import Arrays, array_ref, cold_able, spec_of_row, task_refs
from .events import TasksAdded
from .jobrun import TaskRun
from ..errors import LeaseHeld, SpecError
from ..states import TERMINAL_TASK_STATES, JobState, TaskState

#: Messages Dask keeps per batched stream for debugging (``distributed.admin.low-level-log-length``,
#: 1,000 by default): a message to a node carries a whole bundle of up to 500 attempt requests, so the
#: driver (its client and a local pool's scheduler) held the request of every finished task of a
#: large map (measured: 40,000 of 40,000, about 2.5 kB each).
MESSAGE_LOG = 20


def bound_message_logs() -> None:
    """Keep Dask's debug log of recent stream messages short, unless the user set it themselves.

    Called as a pool starts (not when this module is imported, which would import Dask on the
    way to a new pool's first task): a stream reads the setting when it is opened."""
    import dask.config
    key = "distributed.admin.low-level-log-length"
    if dask.config.get(key, 1000) == 1000:
        dask.config.set({key: MESSAGE_LOG})


#: Ready tasks paged in per node slot (at least :data:`MIN_WINDOW`, at most :data:`MAX_WINDOW`).
PER_SLOT, MIN_WINDOW, MAX_WINDOW = 600, 1000, 20_000


class _Reactivations:
    """A job's reactivated tasks (:meth:`Ledger.reactivations`, one query over its events), read
    once for many rows and only when one of them has run: asked per row, adding again 3,000 tasks
    that had run took 7 s here, and grew with the square of their number."""

    def __init__(self, ledger, job_id: str):
        self._ledger, self._job_id, self._map = ledger, job_id, None

    def of(self, task_key: str) -> int:
        if self._map is None:
            self._map = self._ledger.reactivations(self._job_id)
        return self._map.get(task_key, 0)


class TaskTable(dict):
    """A job's tasks held in memory (task key -> TaskRun). Tasks waiting in the ledger alone
    are not in it; ``bool()`` still says whether the job has any task at all."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.any = False            # the job has (had) a task, held or not
        self.cold = False           # tasks wait in the ledger alone, to be paged in
        self.after = 0              # paged in up to this ledger row

    def __bool__(self) -> bool:
        return self.any or len(self) > 0


def tables(job) -> TaskTable:
    """The job's TaskTable (made once, when the dispatcher takes the job on), its graph sparse."""
    if not isinstance(job.tasks, TaskTable):
        if not job.graph.deps:
            job.graph.sparse = True
        job.tasks = TaskTable(job.tasks)
        job.tasks.any = bool(job.tasks)
    return job.tasks


class TaskPaging:
    """Needs the dispatcher's ``ledger``, ``engine``, ``jobs``, ``ready``, ``nodes``, ``batch``,
    ``events`` and the outcome methods."""

    @property
    def _fresh_arrays(self) -> dict:
        return self.__dict__.setdefault("_fresh", {})

    @property
    def arrays(self) -> Arrays:
        arrays = self.__dict__.get("_arrays")
        if arrays is None:
            arrays = self.__dict__["_arrays"] = Arrays(self.ledger, self.engine.storage_options,
                                                       self.engine.results_url)
        return arrays

    # -- adding a chunk of a map --------------------------------------------
    @auditops.add_array_chunk
    def add_array_chunk(self, job_key: str, array_id: str, record: str, ids: list[str], first: int,
                        replace: bool = False) -> list[str]:
        """Record tasks ``first ..`` of an array (their ids given); ids the job has already are
        compared with what it holds (equal: nothing to do) or refused/replaced as ``add_tasks`` does."""
        job = self.jobs.get(job_key)
        if job is None:
            raise LeaseHeld(f"job {job_key!r} is dispatched by another process now; this process only watches it")
        table = tables(job)
        self.arrays.forget(job.spec.id, array_id)
        self.ledger.put_array(job.spec.id, array_id, record, time.time())
        # Ids of this array's own chunks never clash: only a job that had tasks before it is asked.
        if first == 0:
            self._fresh_arrays[array_id] = not table.any
        asked = table.any and not self._fresh_arrays.get(array_id)
        clash = {r["id"].lower(): r for r in self.ledger.tasks_named(job.spec.id, ids)} if asked else {}
        if job.state != JobState.ACTIVE and not clash:
            raise SpecError("job", job.spec.id, f"is {job.state.value} ({job.reason}); it accepts no more tasks")
        fresh, again = [], []
        for k, task_id in enumerate(ids):
            old = clash.get(task_id.lower())
            if old is None:
                fresh.append((first + k, task_id))
                continue
            ref = array_ref(old["spec"])
            if ref is not None and ref[0] != array_id and self.arrays.same(job.spec.id, ref, (array_id, first + k)):
                continue
            again.append(self.arrays.spec(job.spec.id, array_id, first + k))
        if again:                   # not the same task: compared, refused or replaced task by task
            self.add_tasks(job_key, again, replace)
        if not fresh:
            return ids
        if job.state != JobState.ACTIVE:
            raise SpecError("job", job.spec.id, f"is {job.state.value} ({job.reason}); it accepts no more tasks")
        now = time.time()
        info = json.loads(record)
        ref = task_refs(array_id, info["name"], info.get("kind"))
        seq, active = job.next_seq, TaskState.ACTIVE.value
        rows = [(task_id, seq + k, ref(index), active) for k, (index, task_id) in enumerate(fresh)]
        job.next_seq += len(rows)
        # Written before it is seen; the tasks wait in the ledger until paged in.
        self.ledger.add_tasks(job.spec.id, rows, now, array=(array_id, record))
        job.counts[TaskState.ACTIVE] += len(rows)
        table.any = table.cold = True
        self.events.append(TasksAdded(job.spec.id, len(rows), now, {TaskState.ACTIVE.value: len(rows)}))
        return ids

    # -- paging ready tasks in ------------------------------------------------
    def window(self) -> int:
        return max(MIN_WINDOW, min(MAX_WINDOW, PER_SLOT * max(1, self.nodes.total_slots())))

    def page_in(self) -> None:
        """Top the ready queue up from the ledger when it runs below half a window."""
        want = self._last_window = self.window()
        if len(self.ready) * 2 >= want:
            return
        for job in list(self.jobs.values()):
            table = job.tasks
            if not isinstance(table, TaskTable) or not table.cold or job.state != JobState.ACTIVE:
                continue
            limit = want - len(self.ready)
            if limit <= 0:
                return
            rows = self.ledger.ready_page(job.spec.id, table.after, limit)
            if len(rows) < limit:
                table.cold = False
            since = _Reactivations(self.ledger, job.spec.id)
            for row in rows:
                table.after = row["rowid"]
                key = row["id"].lower()
                if key in table:
                    continue            # held already (requeued, retried, or resumed so)
                tr = self._run_of_row(job, row, since)
                table[key] = tr
                self.push_ready(job, tr)

    def _run_of_row(self, job, row, reactivated: "_Reactivations") -> TaskRun:
        tr = TaskRun(spec_of_row(self.arrays, job.spec.id, row["spec"]), row["seq"], TaskState(
            row["state"]) if "state" in row.keys() else TaskState.ACTIVE)
        tr.n, tr.requeues, tr.exit_code, tr.node = row["attempts"], row["requeues"], row["exit_code"], row["node"]
        if tr.n:
            since = reactivated.of(tr.key)
            tr.tries = sum(1 for a in self.ledger.attempts(job.spec.id, tr.spec.id)
                           if a["state"] == "failed" and a["n"] > since)
        return tr

    # -- tasks the job has in the ledger only ---------------------------------
    def load_known(self, job, ids) -> None:
        """Hold these of the job's tasks that are in the ledger only (ids it may hold already):
        tasks added again, or depended on by tasks being added."""
        table = tables(job)
        if not table.any:       # before walking ids: a dependency on a TaskIdRange may name millions
            return
        wanted = {i.lower(): i for i in ids if i.lower() not in table}
        if not wanted:
            return
        since = _Reactivations(self.ledger, job.spec.id)
        for row in self.ledger.tasks_named(job.spec.id, list(wanted.values())):
            tr = self._run_of_row(job, row, since)
            tr.has_result = row["result"] is not None or row["result_url"] is not None
            failure = json.loads(row["failure"]) if row["failure"] else {}
            tr.failure = failure.get("message")
            table[tr.key] = tr
            if tr.state in TERMINAL_TASK_STATES:
                job.actions[tr.key] = "block" if tr.state in (TaskState.BLOCKED, TaskState.CANCELLED) else \
                    self._final_action(tr, failure)
            elif tr.state == TaskState.ACTIVE:
                self.push_ready(job, tr)     # it would have been paged in: it is held now instead


    def resolve(self, job, tr, succeeded: bool, exit_code, category, now: float) -> None:
        super().resolve(job, tr, succeeded, exit_code, category, now)
        # Let go of a task nothing waits on once it succeeded: the ledger has all of it.
        # (A small job keeps them all: what it holds is bounded by a window either way.)
        # (The window as the last page-in measured it: counting the slots again cost more than this.)
        if tr.state == TaskState.SUCCEEDED and isinstance(job.tasks, TaskTable) \
                and len(job.tasks) > getattr(self, "_last_window", MIN_WINDOW) and job.tasks.get(tr.key) is tr \
                and tr.key not in job.graph.deps and not job.graph.dependents.get(tr.key) \
                and tr.spec.multi_instance is None:
            del job.tasks[tr.key]
            job.actions.pop(tr.key, None)
            job.graph.dependents.pop(tr.key, None)

    def cancel_cold(self, job, reason: str, now: float) -> None:
        """End the tasks that wait in the ledger alone (a terminate): one statement, not one per task."""
        left = job.counts[TaskState.ACTIVE] + job.counts[TaskState.PENDING]
        if not left:
            return
        self.batch.cancel_waiting(job.spec.id, now, json.dumps({"category": "terminated",
                                                                "message": f"job ended: {reason}"}))
        job.counts[TaskState.CANCELLED] += left
        job.counts[TaskState.ACTIVE] = job.counts[TaskState.PENDING] = 0
        tables(job).cold = False

    # -- resuming a job ---------------------------------------------------------
    def resume_tasks(self, job) -> list[TaskRun]:
        """Read a job's tasks back: hold those that are not merely waiting or done, count the rest.

        Returns the held tasks; those left in the ledger are paged in as slots free up."""
        table = tables(job)
        since = self.ledger.reactivations(job.spec.id)
        held, items = [], []
        job.counts.update(Counter({TaskState(s): n for s, n in self.ledger.task_counts(job.spec.id).items()}))
        job.next_seq = self.ledger.max_task_seq(job.spec.id) + 1
        table.any = job.next_seq > 0
        for r in self.ledger.iter_tasks(job.spec.id):
            state = TaskState(r["state"])
            if cold_able(r["spec"]) and state in (TaskState.ACTIVE, TaskState.SUCCEEDED):
                table.cold = table.cold or state == TaskState.ACTIVE
                continue
            spec = spec_of_row(self.arrays, job.spec.id, r["spec"])
            tr = TaskRun(spec, r["seq"], state)
            tr.n, tr.requeues, tr.exit_code, tr.node = r["attempts"], r["requeues"], r["exit_code"], r["node"]
            tr.has_result = bool(r["has_result"])
            failure = json.loads(r["failure"]) if r["failure"] else {}
            tr.failure = failure.get("message")
            tr.tries = sum(1 for a in self.ledger.attempts(job.spec.id, spec.id) if a["state"] == "failed"
                           and a["n"] > since.get(tr.key, 0)) if tr.n else 0
            table[tr.key] = tr
            held.append((tr, failure))
            items.append((spec.id, spec.depends_on))
        # What the held tasks depend on is held too (their outcomes decide them).
        needed = {d for _, deps in items for d in deps if d.lower() not in table}
        job.graph.add(items, exists=lambda key: True)
        for tr, failure in held:
            if tr.state in TERMINAL_TASK_STATES:
                job.actions[tr.key] = "block" if tr.state in (TaskState.BLOCKED, TaskState.CANCELLED) else \
                    self._final_action(tr, failure)
        if needed:
            self.load_known(job, sorted(needed))
        return [tr for tr, _ in held]
