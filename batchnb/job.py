"""``Job``: tasks added to it are dispatched at once; ``wait()`` or ``await`` for the end.

A job lives in the ledger: ``bnb.Job.attach(id)`` reads one back, from any process.

>>> import batchnb as bnb
>>> bnb.Job.attach("no-such-job")
Traceback (most recent call last):
...
batchnb.SpecError: job id: 'no-such-job' is invalid: not in the ledger .../ledger.sqlite
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import time
from collections import Counter
from typing import TYPE_CHECKING

from .node import pycall as _pycall
from . import spec as specs
from .result import JobResult
from . import _config
from ._display import drawer
from .errors import LeaseHeld, PoolStalled, SpecError, WaitTimeout
from .spec.options import fn_name as _fn_name, job_options, task_options
from .spec.resume import check_same as _check_same, recorded_options as _recorded_options
from .spec.taskjson import task_of_stream as _task_spec
from .engine.counters import JobStats, TaskCounts, job_stats
from .engine.ledger import Ledger
from .states import FAILED_TASK_STATES, LIVE_TASK_STATES, JobState, TaskState
from .task import Task, TaskInfo, TaskList, plain_lists, task_info

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
    from typing import Any

    import pandas

    import batchnb          # the Pool is a layer above: named as users name it, bnb.Pool
    from .cost import Cost, Forecast
    from .engine.jobprep import PrepRun
    from .engine.jobrun import JobRun

def open_job(pool, job_id, options: dict) -> "Job":
    """pool.job(...): a new job, the live one of this process, or a resumed one from the ledger.

    ``pool.job(id)`` with no options re-attaches to the job of that id as it was
    made (DESIGN.md: a re-run notebook resumes); options given must match it.
    """
    options = job_options(options)
    reattach = not options and not isinstance(job_id, specs.JobSpec)
    if isinstance(job_id, specs.JobSpec):
        spec = dataclasses.replace(job_id, **options) if options else job_id
    else:
        spec = specs.JobSpec(id=job_id, **options)
    tasks, spec = spec.tasks, dataclasses.replace(spec, tasks=())
    disp = pool._dispatcher
    run = disp.jobs.get(spec.id.lower())
    if run is None and getattr(pool, "_agent", None) is not None:   # detached: the agent opens (or resumes) it
        run = disp.open_job(spec, reattach)
    if run is None:
        row = pool.ledger.job(spec.id)
        if row is None:
            run = disp.call(disp.create_job, spec, pool._owner, timeout=None)
        else:
            if not reattach:
                _check_same(spec, row)
            holder = pool.ledger.acquire_lease(spec.id, pool._owner, pool._lease_ttl)
            if holder is not None:
                raise LeaseHeld(f"job {spec.id!r} is being dispatched by another live process ({holder}); "
                                f"use bnb.Job.attach({spec.id!r}) to watch it, or wait for its lease to expire")
            run = disp.call(disp.resume_job, row, pool._owner, timeout=None)  # a large job takes long
    elif not reattach:
        _check_same(spec, {"spec": json.dumps(specs.to_dict(run.spec))})
    job = Job(pool, run)
    if tasks:
        job.add_tasks(tasks)
    return job


class Job:
    """A job on a pool: add tasks, watch them, wait for the end.

    >>> import batchnb as bnb, statistics
    >>> def estimate_pi(seed, n=20_000):
    ...     import random
    ...     rng = random.Random(seed)
    ...     return 4 * sum(rng.random() ** 2 + rng.random() ** 2 <= 1 for _ in range(n)) / n
    >>> with bnb.Pool("doc", dedicated=1, task_slots_per_node=2) as pool:
    ...     job = pool.job("mc", max_task_retries=2)
    ...     parts = job.map(estimate_pi, range(8))           # one task per item
    ...     mean = job.submit(statistics.mean, parts)        # tasks in the arguments: dependencies
    ...     print(job.wait())
    ...     print(round(mean.result(), 2), job.counts()["succeeded"], parts[0].task_id)
    job mc: all_tasks_complete in ...s (9 succeeded)
    3.14 9 estimate_pi-0
    """

    def __init__(self, pool: batchnb.Pool | None, run: JobRun, ledger: Ledger | None = None) -> None:
        self.pool = pool
        self._run = run
        self.ledger = ledger or pool.ledger
        self.id = run.spec.id
        self._auto_ids: dict[str, itertools.count] = {}

    # -- adding tasks ------------------------------------------------------------
    def _dispatcher(self):
        if self.pool is None or self.pool._closed:
            raise SpecError("job", self.id, "is not attached to an open pool; use pool.job(id) to resume it")
        return self.pool._dispatcher

    def add_task(self, task_id: str | int, command: str | Sequence[str] | None = None, *, replace: bool = False,
                 **options: Any) -> Task:
        """Add one command-line task (a string runs under /bin/sh -c, a list as argv)."""
        return self._add_one(specs.TaskSpec(task_id, command, **options), replace)

    def add_tasks(self, tasks: Iterable[specs.TaskSpec | Mapping[str, Any]], *, replace: bool = False) -> TaskList:
        """Add many tasks (TaskSpecs or dicts); a dependency may name a task added before or in the same chunk.

        ``tasks`` may be any iterable, a generator of a million specs too: it is read in
        chunks of 10,000, never held whole, and each chunk is checked and written to the
        ledger in one transaction. A bad task raises a :class:`bnb.SpecError` naming it and
        its field; the chunks before its own stay added (their tasks run). Returns a :class:`TaskList`."""
        from .engine.addstream import add_stream
        return TaskList(self, add_stream(self._dispatcher(), self._run.key, tasks, replace, _task_spec))

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
        """Run ``fn(*args, **kwargs)`` as a task; Task handles in the arguments become
        dependencies and are replaced by their results. Task options (``task_id``,
        ``retry``, ``max_wall_clock``, ``depends_on``...) are taken out of ``kwargs``."""
        if not callable(fn):
            raise SpecError("fn", fn, "expected a callable")
        opts = task_options(fn, kwargs, "job.submit()")
        return self._add_one(self._python_spec(fn, args, kwargs, opts), opts.get("replace", False))

    def _add_one(self, spec: specs.TaskSpec, replace: bool) -> Task:
        """Checked now; queued without waiting for the dispatcher when nothing about it needs its
        answer (engine/posted.py): a loop of submits costs no round trip each."""
        posted = getattr(self._dispatcher(), "posted", None)     # a detached pool's proxy has none
        if posted is not None and not replace and posted.offer(self._run, spec):
            return Task(self, spec.id)
        return self.add_tasks([spec], replace=replace)[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> TaskList:
        """One task per item (as ``map``); task options as in :meth:`submit`. A :class:`TaskList`."""
        if not callable(fn):
            raise SpecError("fn", fn, "expected a callable")
        prefix = kwargs.pop("task_prefix", None)
        opts = task_options(fn, kwargs, "job.map()", extra=("task_prefix",))
        if "task_id" in opts:
            raise SpecError("task_id", opts["task_id"], "map() names its tasks itself; use task_prefix=")
        if self._array_fits(opts, kwargs):      # one array spec plus an index per task
            from .engine.jobmap import map_array
            from .engine.taskids import TaskIds
            name = _fn_name(fn)
            start = 0 if prefix else next(self._auto_ids.setdefault(name, itertools.count()))
            ids = (prefix, 0) if prefix else (f"{name}-", start)
            disp = self._dispatcher()       # a detached pool's proxy maps in its agent, in pieces
            add = getattr(disp, "map_array", None) or functools.partial(map_array, disp)
            n = add(self._run.key, fn, name, iterables, kwargs, opts, ids, self._python_spec,
                    lambda x: isinstance(x, Task) and self._own_task(x))
            if not prefix:
                self._auto_ids[name] = itertools.count(start + n)
            return TaskList(self, TaskIds.counted(*ids, n))
        made = (self._python_spec(fn, args, dict(kwargs), {**opts, **({"task_id": f"{prefix}{i}"} if prefix else {})})
                for i, args in enumerate(zip(*iterables)))
        return self.add_tasks(made, replace=opts.get("replace", False))

    def sweep(self, command: str, *ranges: range, id: str | None = None, **options: Any) -> TaskList:
        """A command line task per value of ``ranges``, as Azure Batch's parametric sweep: ``{0}``
        (``{0:04d}``...) in ``command`` and ``id`` is the first range's value, ``{1}`` the second's
        (several ranges nest, the last fastest). Stored as one array spec: a million tasks add in
        seconds. Task options as :meth:`add_task`'s. Returns a :class:`TaskList`.

        >>> import batchnb as bnb
        >>> with bnb.Pool("doc", dedicated=1) as pool:
        ...     job = pool.job("frames")
        ...     frames = job.sweep("echo frame {0:03d} of {1}", range(0, 6, 2), range(1, 3), id="f{0}-{1}")
        ...     print(job.wait(quiet=True).ok, len(frames), frames[3].task_id, frames[3].stdout().strip())
        True 6 f2-2 frame 002 of 2
        """
        from .engine.sweep import add_sweep, Sweep
        from .engine.taskids import TaskIds
        replace = bool(options.pop("replace", False))
        sweep, ids = Sweep(command, ranges, id, options), TaskIds()
        disp = self._dispatcher()           # a detached pool's proxy sweeps in its agent
        (getattr(disp, "add_sweep", None) or functools.partial(add_sweep, disp))(self._run.key, sweep, replace, ids)
        return TaskList(self, ids)

    def _array_fits(self, opts: dict, kwargs: dict) -> bool:
        """A map is one array spec unless its tasks need to be apart: dependencies, a priority
        (the ready order of tasks paged in from the ledger is the order of adding)."""
        from .node.pycall import extract
        found: dict = {}
        extract(plain_lists(kwargs), lambda x: isinstance(x, Task), found)
        return not found and not opts.get("depends_on") and not opts.get("priority")

    def _own_task(self, x: Task) -> bool:
        if x.job.id.lower() != self.id.lower():
            raise SpecError("job.map() arguments", x, f"is a task of job {x.job.id!r}; a task's arguments may only "
                            f"hold tasks of its own job ({self.id!r}); pass the value instead, e.g. other.result()")
        return True

    def _python_spec(self, fn, args, kwargs, opts) -> specs.TaskSpec:
        args, kwargs, opts = plain_lists(args), plain_lists(kwargs), dict(opts)
        opts.pop("replace", None)
        name = _fn_name(fn)
        task_id = opts.pop("task_id", None)
        if task_id is None:
            counter = self._auto_ids.setdefault(name, itertools.count())
            task_id = f"{name}-{next(counter)}"
        def is_handle(x) -> bool:
            if isinstance(x, Task) and x.job.id.lower() != self.id.lower():
                raise SpecError(f"task {task_id!r} arguments", x,
                                f"is a task of job {x.job.id!r}; a task's arguments may only hold tasks of its own "
                                f"job ({self.id!r}); pass the value instead, e.g. other.result()")
            return isinstance(x, Task)
        return _pycall.python_task_spec(task_id, name, fn, args, kwargs, opts, is_handle)

    # -- watching ------------------------------------------------------------------
    @property
    def state(self) -> JobState:
        row = self.ledger.job(self.id)
        return JobState(row["state"])

    def counts(self) -> dict[str, int]:
        counts = self.ledger.task_counts(self.id)
        return {s.value: counts.get(s.value, 0) for s in TaskState}

    def task(self, task_id: str) -> Task:
        if self.ledger.task(self.id, task_id) is None:
            raise KeyError(f"job {self.id!r} has no task {task_id!r}")
        return Task(self, task_id)

    def tasks(self, state: str | TaskState | None = None) -> list[TaskInfo]:
        if state is None:
            rows = self.ledger.tasks(self.id)
        else:
            rows = self.ledger.tasks(self.id, states=(TaskState(state),))
        return [task_info(r) for r in rows]

    def prep_runs(self) -> list[PrepRun]:
        """The runs of the job's preparation task, one per node and run (:class:`PrepRun`):
        state, attempts with exit code and the tails of stdout and stderr."""
        from .engine.jobprep import prep_runs
        return prep_runs(self.ledger, self.id)

    def release_runs(self) -> list[PrepRun]:
        """The runs of the job's release task, one per node (:class:`PrepRun`)."""
        from .engine.jobprep import RELEASE_EVENT, prep_runs
        return prep_runs(self.ledger, self.id, RELEASE_EVENT)

    def frame(self) -> pandas.DataFrame:
        """The tasks as a pandas DataFrame indexed by task id: ``created``, ``started`` and
        ``ended`` as UTC Timestamps, ``duration`` a Timedelta, ``exit_code`` an ``Int64``."""
        from .engine.counters import first_starts, task_frame
        return task_frame(self.tasks(), first_starts(self.ledger, self.id))

    def task_counts(self) -> TaskCounts:
        """Tasks per state (:class:`bnb.TaskCounts`), from the ledger's counters: O(1) in the job's size."""
        return TaskCounts.of(self.ledger.task_counts(self.id))

    def stats(self) -> JobStats:
        """Wall clock, summed task time, wait time, retries, requeues, bytes in/out (:class:`bnb.JobStats`)."""
        return job_stats(self.ledger, self.id)

    def _done(self) -> bool:
        row = self.ledger.job(self.id)
        if row["state"] == JobState.COMPLETED.value:
            return True
        counts = self.ledger.task_counts(self.id)
        live = sum(n for s, n in counts.items() if s in LIVE_TASK_STATES)
        return live == 0  # a job with no tasks has nothing to wait for

    def wait(self, timeout: float | None = None, *, quiet: bool | None = None) -> JobResult:
        """Block until every task has ended (or the job ended); return a :class:`JobResult`.

        In a terminal, progress is drawn while waiting unless ``quiet``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with drawer("waiting")(self, quiet):
            while True:
                done, releasing, blocked, result = self._progress()
                if done and not releasing:
                    return result
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"job {self.id!r} did not finish within {timeout}s: {self.counts()}")
                if self.pool is not None and self.pool._closed:
                    raise WaitTimeout(f"the pool of job {self.id!r} was closed before the job finished; "
                                      f"resume it with pool.job({self.id!r})")
                stalled = self.pool._dispatcher.why_stuck() if self._dispatched_here() else None
                if stalled is None:             # its preparation failed on every node
                    stalled = blocked
                if stalled is not None and time.time() - stalled[0] > _config.seconds("stall-grace"):
                    raise PoolStalled(f"job {self.id!r} cannot make progress: {stalled[1]} "
                                      f"({self.counts()}); resize the pool or close it")
                if not self._dispatched_here() and self.ledger.lease(self.id) is None and not self._done():
                    # Only watching, and nobody dispatches it any more: it would never end.
                    raise WaitTimeout(f"job {self.id!r} is not finished and no live process dispatches it "
                                      f"({self.counts()}); resume it with pool.job({self.id!r}) or "
                                      f"'batchnb resume {self.id}'")
                with self._run.changed:
                    self._run.changed.wait(0.5 if left is None else min(0.5, left))

    def _progress(self, with_result: bool = False) -> tuple[bool, bool, tuple | None, JobResult | None]:
        """What ``wait`` looks at: whether the job is done, whether its release tasks still run, why its
        preparation blocks it on every node (or None), and its :class:`JobResult` when it is done and
        released (or ``with_result``). A detached pool's agent answers it all in one call: read piece
        by piece through the agent it took a dozen."""
        remote = self._agent_progress()
        if remote is not None:
            return remote(self.id, with_result)
        done = self._done()
        releasing = self._dispatched_here() and bool(self.pool._dispatcher.preps.releasing.get(self._run.key))
        blocked = self.pool._dispatcher.preps.blocked.get(self._run.key) if self._dispatched_here() else None
        result = self._result_here() if with_result or (done and not releasing) else None
        return done, releasing, blocked, result

    def _dispatched_here(self) -> bool:
        return self.pool is not None and self.pool._dispatcher.jobs.get(self._run.key) is self._run

    def _agent_progress(self):
        """A detached pool's ``job_progress`` (its agent's answer to ``_progress``), or None in-kernel."""
        remote = getattr(self.pool._dispatcher, "job_progress", None) if self.pool is not None else None
        return remote if remote is not None and self._dispatched_here() else None

    def result(self) -> JobResult:
        """The job's summary now (counts, failures, cost, wall time, reason)."""
        remote = self._agent_progress()
        return remote(self.id, True)[3] if remote is not None else self._result_here()

    def _result_here(self) -> JobResult:
        row = self.ledger.job(self.id)
        counts = {k: v for k, v in self.counts().items() if v}
        failures = []
        for r in self.ledger.tasks(self.id, ("id", "state", "exit_code", "node", "failure"),
                                   states=FAILED_TASK_STATES):
            f = json.loads(r["failure"]) if r["failure"] else {}
            failures.append({"task_id": r["id"], "state": r["state"], "exit_code": r["exit_code"],
                             "node": r["node"], "category": f.get("category"), "message": f.get("message")})
        # The job's own state word, as job.state reads it: a "noaction" job whose tasks all
        # ended is still active (it accepts tasks); that its tasks ended is a fact beside it.
        tasks_complete = not any(counts.get(s.value) for s in LIVE_TASK_STATES)
        done = row["state"] == JobState.COMPLETED.value or tasks_complete
        reason = row["reason"] or ("all_tasks_complete" if done else None)
        ended = row["ended"] or (time.time() if not done else self.ledger.last_task_end(self.id) or time.time())
        # Its totals: a row per task is job.cost()'s to make (for a million tasks, a dict each).
        cost = self._cost(detail=False)
        return JobResult(self.id, JobState(row["state"]).value, reason, counts, failures,
                         ended - row["created"], cost, all_tasks_complete=tasks_complete)

    def cost(self) -> Cost | None:
        """The job's cost so far (:class:`bnb.Cost`): its tasks' shares of node time x price.

        ``job.cost().frame()`` has one row per task, with the pool's and the
        job's tags as columns. A job attached without a pool is priced from
        the ledger (:func:`batchnb.cost.cost_from_ledger`).
        """
        return self._cost(detail=True)

    def _cost(self, detail: bool) -> Cost | None:
        if self.pool is not None:
            return self.pool._job_cost(self.id, detail=detail)
        from .cost import cost_from_ledger
        return cost_from_ledger(self.ledger, job_id=self.id)

    def forecast(self) -> Forecast:
        """Projected total cost and finish time (:class:`bnb.cost.Forecast`) from the tasks
        left, the durations observed so far and the pool's slots; fields are None until
        a task has ended."""
        from .extensions.cost import CostExtension
        if self.pool is None:
            raise SpecError("job", self.id, "has no pool to forecast on; attach it with pool.job(id)")
        return self.pool.extension(CostExtension).forecast(self.id)

    def __await__(self) -> Generator[Any, None, JobResult]:
        # wait() blocks, so it runs in the loop's executor: the loop stays free.
        return asyncio.get_running_loop().run_in_executor(None, lambda: self.wait(quiet=True)).__await__()

    # -- ending --------------------------------------------------------------------
    def terminate(self, reason: str = "terminated") -> None:
        """Kill the running tasks (their whole process trees) and cancel the rest.

        On a job this process only watches (``Job.attach(id)``, or a lease
        lost to another process) the dispatching process is asked to end it;
        with none, the job is ended in the ledger."""
        if self.pool is not None and not self.pool._closed:
            disp = self.pool._dispatcher
            if disp.call(lambda: disp.jobs.get(self._run.key) is self._run):
                disp.call(disp.terminate, self._run, reason, time.time(), timeout=None)
                return
        from .engine.offline import terminate_job
        terminate_job(self.id, self.ledger, reason)

    cancel = terminate

    # -- failures you can act on ---------------------------------------------------
    def failures(self) -> list[dict]:
        """Failed tasks grouped by exit code and category with counts, largest first; each group
        has a few of its tasks with node, message and stdout/stderr tails (kept after the node is gone)."""
        return self.ledger.failure_groups(self.id)

    def reactivate_failed(self) -> list[str]:
        """Run every failed task again (Azure's reactivate, task by task): retry counts reset, the
        tasks they blocked wait for them again, a completed job is active again. Their ids."""
        return self._reactivate(None)

    def _reactivate(self, task_ids: list[str] | None) -> list[str]:
        from .engine.reactivate import reactivate
        if self.pool is None or self.pool._closed or not self._dispatched_here():
            raise LeaseHeld(f"job {self.id!r} is not dispatched by this process: reactivate it in the one that "
                            "runs it, or attach it from a live pool")
        disp = self.pool._dispatcher
        return disp.call(reactivate, disp, self._run, task_ids, timeout=None)

    def timeline(self) -> Any:
        """A zoomable timeline of the job's attempts, a lane per node (:class:`batchnb.ui.TimelineView`)."""
        return drawer("TimelineView")(self)

    # -- showing -------------------------------------------------------------------
    def __repr__(self):
        counts = Counter({k: v for k, v in self.counts().items() if v})
        return f"<batchnb.Job {self.id!r} {self.state.value}: {dict(counts)}>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        return drawer("job_bundle")(self)

    def view(self) -> Any:
        """The live :class:`~batchnb.ui.JobView` of this job (needs ``batchnb[notebook]``)."""
        return drawer("JobView")(self)

    @classmethod
    def attach(cls, job_id: str, pool: batchnb.Pool | None = None, ledger: Ledger | None = None) -> Job:
        """A job from the ledger: resumed on ``pool`` if given, else read-only."""
        if pool is not None:
            return pool.job(job_id, **_recorded_options(pool.ledger, job_id))
        from .engine.ledger import default_ledger
        ledger = ledger or default_ledger()
        row = ledger.job(job_id)
        if row is None:
            raise SpecError("job id", job_id, f"not in the ledger {ledger.path}")
        from .engine.jobrun import JobRun
        spec = specs.from_dict(specs.JobSpec, json.loads(row["spec"]))
        return cls(None, JobRun(spec, row["pool"], row["created"], state=JobState(row["state"])), ledger)
