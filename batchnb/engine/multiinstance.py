"""Multi-instance (MPI) tasks: whole nodes reserved together, coordination, then the primary.

A mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`, run on its thread. As Azure runs
a task with ``multi_instance=bnb.MultiInstance(n, coordination_command, common_inputs)``:

- It starts only when ``n`` whole nodes are free at once (no slot of theirs in use), and
  then takes them all in one step. Nothing is held while it waits, so two multi-instance
  tasks, or one and the ordinary tasks, can never each hold part of what the other needs.
- So that a stream of small tasks cannot starve it, the first multi-instance task in queue
  order that cannot start claims the ``n`` schedulable nodes closest to free
  (:meth:`MultiInstances.mi_claim`): tasks after it in the queue (lower priority, or equal
  and added later) get no new place on those nodes, which drain until it fits; tasks ahead
  of it in the queue are placed as before. The claim is made anew on every scheduling pass,
  so it never outlives the wait, and only while the pool has ``n`` schedulable nodes (a
  pool short of nodes keeps running its other tasks meanwhile).
- Every instance stages ``common_inputs`` into its ``AZ_BATCH_TASK_SHARED_DIR`` and runs the
  coordination command, in parallel, one per node (the primary too); once all succeeded
  the primary runs the application command; the task's exit code is the primary's. A
  coordination command that fails fails the attempt (retried as any attempt).
- A lost instance (its node gone) requeues the whole task, its other instances stopped,
  as Azure does; the task ending in any way stops what is left of it and frees its nodes.
- Each instance is recorded as an event of kind ``subtask`` (``t.subtasks()`` reads them).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field

from .. import _config
from ..errors import SpecError
from ..node import multiinstance as _node_mi

log = logging.getLogger("batchnb.dispatch")


def host_of(address: str | None) -> str:
    """The host part of a worker address (``tcp://10.0.0.4:40123`` -> ``10.0.0.4``).

    >>> host_of("tcp://127.0.0.1:40123"), host_of("tls://[::1]:8786")
    ('127.0.0.1', '::1')
    """
    rest = (address or "").split("://", 1)[-1]
    host = rest.rpartition(":")[0] if rest.count(":") == 1 or rest.startswith("[") else rest
    return host.strip("[]") or "127.0.0.1"


@dataclass
class MultiRun:
    """One attempt of a multi-instance task in flight."""

    job_key: str
    task_key: str
    n: int
    nodes: list                       # node ids, the primary first
    hosts: list                       # the address each instance is reached at (AZ_BATCH_HOST_LIST)
    request: object                   # the primary's application request
    phase: str = "coordinating"       # then "running": the primary's application command
    coordinated: set = field(default_factory=set)
    futures: dict = field(default_factory=dict)   # Dask key -> instance
    ended: set = field(default_factory=set)       # instances whose record is final
    coordination: dict = field(default_factory=dict)   # instance -> its coordination command's exit code

    @property
    def reservation(self) -> str:
        return f"bnb-mi-{self.job_key}-{self.task_key}-{self.n}"


class MultiInstances:
    """Needs the dispatcher's ``nodes``, ``inflight``, ``client``, ``batch``, ``engine``, ``multi``
    and the outcome methods (``make_request``, ``requeue``)."""

    # -- add_task --------------------------------------------------------------
    def mi_check(self, spec) -> None:
        """Refuse at once a multi-instance task that could never run on this pool."""
        mi = spec.multi_instance
        if spec.python is not None:
            raise SpecError("multi_instance", mi.number_of_instances,
                            f"task {spec.id!r}: a multi-instance task runs a command line (e.g. mpiexec), "
                            "not a Python callable")
        count, why = self._mi_capacity()
        if count is not None and mi.number_of_instances > count:
            raise SpecError("multi_instance.number_of_instances", mi.number_of_instances,
                            f"task {spec.id!r} needs {mi.number_of_instances} nodes at once and pool "
                            f"{self.engine.name!r} {why}; it could never run (resize the pool first)")

    def _mi_capacity(self) -> tuple[int | None, str]:
        spec = self.engine.spec
        if spec.autoscale is not None:
            most = 2 * int(_config.get("autoscale-max-nodes"))
            return most, f"scales to at most {most} nodes (batchnb.autoscale-max-nodes per node group)"
        asked = len(self.engine.requested())
        known = sum(1 for n in self.nodes.nodes.values() if n.address is not None)
        if not asked and not known:
            return None, ""       # nodes come from elsewhere and none is known yet: nothing to go by
        count = max(asked, known)
        return count, f"has {count} node{'s' * (count != 1)}"

    # -- scheduling --------------------------------------------------------------
    def mi_start(self, job, tr, now: float) -> bool:
        """Start ``tr`` on whole free nodes, all of them or none; False when it must wait."""
        need = tr.spec.multi_instance.number_of_instances
        free = [n for n in self.nodes.nodes.values()
                if n.schedulable and n.used == 0 and n.node_id not in self.nodes.held]
        free = self._mi_prepared(job, free, now)
        if len(free) < need:
            self.mi_claim(need)
            return False
        chosen = sorted(free, key=lambda n: (n.last_used, n.node_id))[:need]
        req = self.make_request(job, tr, chosen[0], now, slots=float(sum(n.slots for n in chosen)))
        if req is None:
            return True           # refused on its way out (a secret): failed, nothing reserved
        hosts = [host_of(n.address) for n in chosen]
        run = MultiRun(job.key, tr.key, tr.n, [n.node_id for n in chosen], hosts,
                       dataclasses.replace(req, host_list=tuple(hosts), instance=0,
                                           job_prep=getattr(job.spec, "prep", None) is not None))
        self.multi[(job.key, tr.key)] = run
        mi = tr.spec.multi_instance
        for i, node in enumerate(chosen):
            self.nodes.take(node, run.reservation, node.slots, now)
            ireq = dataclasses.replace(run.request, instance=i, command=mi.coordination_command,
                                       inputs=mi.common_inputs, outputs=(), node_group=node.group)
            self._mi_submit(run, i, node, _node_mi.run_coordination, ireq)
            self._mi_record(job, tr, run, i, "running", now)
        log.info("job %s: task %s runs on %s", job.spec.id, tr.spec.id, ", ".join(run.nodes))
        return True

    def _mi_prepared(self, job, free: list, now: float) -> list:
        """Of ``free``, the nodes where the job's preparation task allows its tasks; it is started
        on those that have not run it (as for any task: it holds a slot there until it ends)."""
        prep = getattr(job.spec, "prep", None)
        if prep is None:
            return free
        preps = self.preps
        runs = preps.runs.setdefault(job.key, {})
        ready = [n for n in free if preps.ready_on(job, n)]
        for node in free:
            if preps._status(prep, runs, node) is None:
                preps._start(job, node, now)
        if not ready:
            preps._check_blocked(job, runs, now)    # failed everywhere: job.wait() says why
        return ready

    def mi_claim(self, need: int) -> None:
        """Keep later tasks of the queue off the ``need`` nodes closest to free (see the module)."""
        if self.nodes.held:
            return                # an earlier waiting multi-instance task claims already
        nodes = [n for n in self.nodes.nodes.values() if n.schedulable]
        if len(nodes) >= need:
            nodes.sort(key=lambda n: (n.used, n.node_id))
            self.nodes.held.update(n.node_id for n in nodes[:need])

    def _mi_submit(self, run: MultiRun, i: int, node, fn, req) -> None:
        key = f"bnb-{req.job_id}-{req.task_id}-{req.attempt}-i{i}-{next(self._counter)}"
        fut = self.client.submit(fn, req, key=key, workers=[node.address], allow_other_workers=False, pure=False,
                                 resources={"slots": node.slots} if node.resources else None)
        # Slots 0: the nodes are held by the run's reservation, across both phases.
        self.inflight[key] = (fut, node.node_id, [(run.job_key, run.task_key, run.n)], 0)
        run.futures[key] = i
        fut.add_done_callback(lambda f: self._q.put(("done", f)))

    # -- records -------------------------------------------------------------------
    def mi_outcome(self, job, tr, record, now: float):
        """An instance's record: the task's final record, or None while the task goes on."""
        run = self.multi.get((job.key, tr.key))
        if run is None or run.n != record.attempt:
            return record
        if run.phase == "running":
            self._mi_record(job, tr, run, 0, "succeeded" if record.succeeded else "failed", now, record)
            return record
        i = run.nodes.index(record.node_id) if record.node_id in run.nodes else None
        if i is not None:
            self._mi_record(job, tr, run, i, "succeeded" if record.succeeded else "failed", now, record,
                            coordination=True)
        if not record.succeeded or i is None:
            where = f"instance {i} ({record.node_id})" if i is not None else f"node {record.node_id}"
            record.message = f"the coordination command failed on {where}: {record.message or record.category}"
            return record
        run.coordinated.add(i)
        if len(run.coordinated) < len(run.nodes):
            return None
        run.phase = "running"
        primary = self.nodes.nodes.get(run.nodes[0])
        if primary is None or not primary.address:
            self.requeue(job.key, tr.key, run.n, now, f"node {run.nodes[0]} of the task was lost")
            return None
        self._mi_submit(run, 0, primary, _node_mi.run_primary, run.request)
        self._mi_record(job, tr, run, 0, "running", now)
        return None

    def _mi_record(self, job, tr, run: MultiRun, i: int, state: str, now: float, record=None,
                   coordination: bool = False, message: str | None = None) -> None:
        data = {"attempt": run.n, "instance": i, "node": run.nodes[i], "host": run.hosts[i], "state": state,
                "time": now}
        if message is not None:
            data["message"] = message
        if record is not None:
            data.update(exit_code=record.exit_code, message=record.message, start=record.start, end=record.end,
                        task_dir=record.task_dir, stdout=record.stdout_tail, stderr=record.stderr_tail)
            if coordination:
                run.coordination[i] = record.exit_code
        data["coordination_exit_code"] = run.coordination.get(i)
        if state != "running" and not (i == 0 and coordination and state == "succeeded"):
            run.ended.add(i)      # (the primary goes on to its application command)
        self.batch.event(now, "subtask", job.spec.id, tr.spec.id, state, data)

    # -- ending --------------------------------------------------------------------
    def mi_ended(self, job, tr, state, now: float) -> None:
        """The task left ``running`` (ended, requeued, terminated): stop what is left, free its nodes."""
        run = self.multi.pop((job.key, tr.key), None)
        if run is None:
            return
        left = [(key, i) for key, i in run.futures.items() if key in self.inflight]
        for key, i in left:
            fut, node_id, _, _ = self.inflight.pop(key)
            self.release([fut])
            node = self.nodes.nodes.get(node_id)
            if node is not None and node.address:
                threading.Thread(target=self._stop_on, args=(node.address, node_id,
                                                             [(job.spec.id, tr.spec.id, run.n)]),
                                 name=f"batchnb-stop-{self.engine.name}", daemon=True).start()
        for i in range(len(run.nodes)):
            if i not in run.ended:
                self._mi_record(job, tr, run, i, "terminated", now,
                                message=f"stopped: the task's attempt ended ({state.value})")
        for node_id in run.nodes:
            node = self.nodes.nodes.get(node_id)
            if node is not None:
                self.nodes.give_back(node_id, run.reservation, node.slots, now)

    def mi_task_ids(self, key: str) -> list[str]:
        """The task holding a node under reservation ``key`` (``pool.nodes()`` shows it there)."""
        for run in list(self.multi.values()):
            if run.reservation == key:
                tr = self.jobs[run.job_key].tasks.get(run.task_key) if run.job_key in self.jobs else None
                return [tr.spec.id] if tr is not None else []
        return []

    def mi_node_lost(self, node_id: str, reason: str, now: float, crash: bool, preempted: bool = False) -> list:
        """A node went away: every multi-instance task with an instance there is requeued whole."""
        hit = [run for run in self.multi.values() if node_id in run.nodes]
        for run in hit:
            self.requeue(run.job_key, run.task_key, run.n, now, f"instance {run.nodes.index(node_id)} "
                         f"lost: {reason}", crash=crash, preempted=preempted)
        return [(run.job_key, run.task_key) for run in hit]
