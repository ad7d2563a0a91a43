"""A detached pool's engine, as its client sees it: the parts Pool, Job and Task use, asked of the agent.

A client ``Pool`` holds an :class:`EngineProxy` where an in-kernel one holds
its :class:`~batchnb.engine.extension.EngineHandle`, so the same ``Job`` and
``Task`` classes serve both: ``dispatcher.call(dispatcher.add_tasks, ...)``
adds the tasks in the agent, ``pool.extension(CostExtension).cost()``
prices them there, and a job's ``changed`` condition is notified when the
agent's events about it arrive.
"""

from __future__ import annotations

import types
from typing import Any

from .. import _config
from .. import spec as specs
from ..engine.jobrun import JobRun
from ..states import JobState
from .link import AgentLink


class DispatcherProxy:
    """What ``Job``, ``Task`` and ``Pool`` ask of a dispatcher; a detached pool's agent answers."""

    #: Jobs open from this client: a job's ``_run`` here is the one ``Job.wait`` and ``Task.wait``
    #: wait on; its ``changed`` condition is notified by the agent's events.
    jobs: dict[str, JobRun]

    def __init__(self, link: AgentLink):
        self.link = link
        self.jobs = {}
        self.stalled: tuple[float, str] | None = None

    def why_stuck(self) -> tuple[float, str] | None:
        """The agent's answer (its pool's stall, or its dispatcher failing), as of its last events."""
        return self.stalled

    def call(self, fn, *args, timeout: float | None = None, **kwargs) -> Any:
        # The methods below call the agent themselves; nothing runs on a thread of this process.
        return fn(*args, **kwargs)

    def open_job(self, spec: specs.JobSpec, reattach: bool) -> JobRun:
        """``pool.job(...)`` in the agent (which checks, creates, resumes and leases it)."""
        if reattach:
            answer = self.link.call("open_job", job_id=spec.id)
        else:
            answer = self.link.call("open_job", spec=specs.to_dict(spec))
        key = spec.id.lower()
        run = self.jobs.get(key)
        if run is None:
            run = self.jobs[key] = JobRun(specs.from_dict(specs.JobSpec, answer["spec"]), answer["pool"],
                                          answer["created"], state=JobState(answer["state"]),
                                          reason=answer["reason"], ended=answer["ended"])
        return run

    def add_tasks(self, job_key: str, items: list, replace: bool = False) -> list:
        run = self.jobs[job_key]
        ids = self.link.call("add_tasks", job_id=run.spec.id, tasks=[specs.to_dict(t) for t in items],
                             replace=replace)
        # Job.add_tasks makes its Task handles from these.
        return [types.SimpleNamespace(spec=types.SimpleNamespace(id=i)) for i in ids]

    def map_array(self, job_key: str, fn, name: str, iterables: tuple, kwargs: dict, opts: dict,
                  ids: tuple[str, int], python_spec, is_handle) -> int:
        """``job.map`` as task arrays in the agent (``engine.jobmap.map_array``'s part): how many."""
        from .arrayops import map_in_pieces
        return map_in_pieces(self.link, self.jobs[job_key].spec.id,
                             lambda made: self.add_tasks(job_key, made, bool(opts.get("replace"))),
                             fn, name, iterables, kwargs, opts, ids, python_spec, is_handle)

    def add_sweep(self, job_key: str, sweep, replace: bool, ids) -> None:
        """``job.sweep`` as one array spec in the agent; its ids appended to ``ids``."""
        import cloudpickle
        answer = self.link.call("add_sweep", job_id=self.jobs[job_key].spec.id, sweep=cloudpickle.dumps(sweep),
                                replace=replace)
        ids.extend(cloudpickle.loads(answer))

    def terminate(self, run: JobRun, reason: str, now: float, state=None) -> None:
        self.link.call("terminate", job_id=run.spec.id, reason=reason)

    def deliver(self, events: list, stalled) -> None:
        """The agent's events arrived: wake the waits on the jobs they concern."""
        self.stalled = tuple(stalled) if stalled else None
        touched = {getattr(e, "job_id", None) for e in events}
        for job_id in touched:
            run = self.jobs.get(job_id.lower()) if job_id else None
            if run is not None:
                run.notify()

    def job_progress(self, job_id: str, with_result: bool) -> tuple:
        """``Job._progress`` in the agent: done, releasing, blocked, and the JobResult when done or asked."""
        import cloudpickle
        done, releasing, blocked, result = cloudpickle.loads(
            self.link.call("job_progress", job_id=job_id, with_result=with_result))
        return done, releasing, tuple(blocked) if blocked else None, result

    def wake_all(self) -> None:
        for run in list(self.jobs.values()):
            run.notify()


class BackendProxy:
    """What views ask of a backend: its name, whether it scales, the nodes it was asked for."""

    def __init__(self, link: AgentLink, record: dict):
        self.link = link
        self.name = record.get("backend")
        self.can_scale = bool(record.get("can_scale"))
        self.can_preempt = bool(record.get("can_preempt"))

    def requested(self) -> dict[str, str]:
        return self.link.call("requested")


class RemoteExtension:
    """An extension of the agent's pool, or an object reached from it: its methods run there,
    attributes holding plain values come back, other objects are reached the same way."""

    def __init__(self, link: AgentLink, cls: type, path: tuple = ()):
        self._link, self._cls, self._path = link, cls, path

    def _ask(self, path: tuple, call: tuple | None = None):
        import cloudpickle
        answer = self._link.call("extension_get", cls=cloudpickle.dumps(self._cls), path=".".join(path),
                                 args=None if call is None else cloudpickle.dumps(call))
        return answer if isinstance(answer, str) else cloudpickle.loads(answer)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        path = (*self._path, name)
        # A method stays a method and an object an object: asked once per link, not before every
        # call (a detached job.cost() asked twice per call). Plain values are asked each time.
        kinds = self._link.__dict__.setdefault("extension_kinds", {})
        kind = kinds.get((self._cls, path))
        if kind is None:
            kind = self._ask(path)
            if kind in ("method", "object"):
                kinds[(self._cls, path)] = kind
        if kind == "method":
            def call(*args, **kwargs):
                return self._ask(path, (args, kwargs))
            call.__name__ = name
            return call
        if kind == "object":
            return RemoteExtension(self._link, self._cls, path)
        return kind[0]        # a plain value, in a 1-tuple


class EngineProxy:
    """The client's stand-in for the pool's :class:`~batchnb.engine.extension.EngineHandle`."""

    def __init__(self, link: AgentLink, record: dict, spec: specs.PoolSpec):
        self.link = link
        self.name, self.spec = spec.name, spec
        self.dispatcher = DispatcherProxy(link)
        self.backend = BackendProxy(link, record)
        self.owner = f"client {link.id} of the agent pid {record.get('pid')}"
        self.lease_ttl = _config.seconds("lease-ttl")
        self.node_root = ""
        self.storage_options: dict = {}
        self.extensions: list = []          # they run in the agent
        self.closed = False

    def task_output(self, job_id: str, task_id: str, what: str, **kwargs: Any) -> Any:
        """A task's log, tail or pickled result, read by the agent (``Task`` asks this of a client's engine)."""
        return self.link.call("task_output", job_id=job_id, task_id=task_id, what=what, **kwargs)

    def extension(self, cls: type) -> RemoteExtension:
        return RemoteExtension(self.link, cls)

    def requested(self) -> dict[str, str]:
        return self.backend.requested()
