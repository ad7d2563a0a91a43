"""Job-level work of the dispatcher: create, resume, add tasks, terminate.

A mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`, run on its thread through
``Dispatcher.call`` so that every check sees one consistent picture.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections import Counter

from .. import _config
from .. import spec as specs
from . import auditops
from .jobrun import JobRun, TaskRun
from .arrays import spec_cold_able
from .taskstore import tables
from ..spec.taskjson import task_json
from ..errors import LeaseHeld, SpecError
from .events import JobStateChanged, TasksAdded
from ..states import TERMINAL_TASK_STATES, JobState, NodeState, TaskState

log = logging.getLogger("batchnb.dispatch")


def _differences(old: specs.TaskSpec, new: specs.TaskSpec) -> list[str]:
    a, b = specs.to_dict(old), specs.to_dict(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def kill_leftovers(pool_name: str, job_id: str, attempts: set) -> set:
    """SIGKILL this host's processes of these ``(task id, attempt)`` of a job whose driver died.

    They are found by the ``AZ_BATCH_*`` variables every task process (and its
    children) carries, under this batchnb home. Returns the attempts found.
    """
    import psutil
    from .. import _config
    home = str(_config.home())
    found, procs = set(), []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("AZ_BATCH_JOB_ID", "").lower() != job_id.lower() or env.get("AZ_BATCH_POOL_ID") != pool_name \
                or not env.get("AZ_BATCH_NODE_ROOT_DIR", "").startswith(home):
            continue
        key = (env.get("AZ_BATCH_TASK_ID", "").lower(), env.get("AZ_BATCH_TASK_ATTEMPT"))
        if key in attempts:
            try:
                proc.kill()
                found.add(key)
                procs.append(proc)
            except psutil.Error:
                pass
    # Gone before the tasks are queued again, not merely signalled.
    psutil.wait_procs(procs, timeout=5)
    return found


class JobOps:
    @auditops.create_job
    def create_job(self, spec: specs.JobSpec, owner: str) -> JobRun:
        now = time.time()
        body = specs.to_dict(dataclasses.replace(spec, tasks=()))
        self.ledger.create_job(spec.id, body, self.engine.name, now, spec.tags)
        job = JobRun(spec, self.engine.name, now)
        tables(job)
        self._adopt(job, owner, now)
        self.events.append(JobStateChanged(spec.id, JobState.ACTIVE.value, now))
        return job

    def _adopt(self, job: JobRun, owner: str, now: float) -> None:
        self.jobs[job.key] = job
        job.owner = owner
        job.adopted = now
        if job.spec.max_wall_clock is not None:
            job.deadline = job.created + job.spec.max_wall_clock
            self.at(job.deadline, lambda: self.terminate(job, "max_wall_clock", time.time()))
        self._renew_lease(job)

    def _renew_lease(self, job: JobRun) -> None:
        if job.state == JobState.COMPLETED or self.jobs.get(job.key) is not job:
            return
        ttl = self.engine.lease_ttl
        now = time.time()
        try:
            row = self.ledger.job(job.spec.id)
            if row is not None and row["state"] == JobState.COMPLETED.value:
                # Ended by another process (``batchnb terminate`` while this one was frozen):
                # its lease is free now, but taking it again would undo that ending.
                self._lose_job(job, f"another process, which ended it ({row['reason']})", now)
                return
            holder = self.ledger.acquire_lease(job.spec.id, job.owner, ttl, now=now)
            if holder is not None:
                self._lose_job(job, holder, now)
                return
            # Another process (``batchnb terminate``) may ask the holder to end the job.
            asked = self.ledger.last_audit(job.spec.id, "terminate-request", since=job.adopted)
            if asked is not None:
                self.terminate(job, asked["detail"] or "terminated", now)
                return
        except Exception:  # e.g. the ledger is locked a while: renew on the next round, never stop renewing
            log.exception("batchnb could not renew the lease of job %s", job.spec.id)
        self.at(now + min(ttl / 3, 2.0), lambda: self._renew_lease(job))

    def _lose_job(self, job: JobRun, holder: str, now: float) -> None:
        """Another process took the lease (ours had expired): stop dispatching the job here.

        Its running attempts are killed, as the new holder runs them again;
        the ledger's fence drops whatever this process would still write.
        """
        log.warning("batchnb: job %r is dispatched by %s now; this process only watches it", job.spec.id, holder)
        self._kill_running(job)
        for tr in job.tasks.values():
            if tr.state == TaskState.RUNNING:
                self.engine.task_ended(job, tr, now)
        del self.jobs[job.key]
        job.notify()

    def resume_job(self, row: dict, owner: str) -> JobRun:
        """Rebuild a job from the ledger; attempts that were running become ``interrupted``."""
        now = time.time()
        spec = specs.from_dict(specs.JobSpec, json.loads(row["spec"]))
        job = JobRun(spec, row["pool"] or self.engine.name, row["created"], state=JobState(row["state"]),
                     reason=row["reason"], ended=row["ended"])
        # Tasks that merely wait, or succeeded, stay in the ledger alone (engine/taskstore.py).
        self.resume_tasks(job)
        self._adopt(job, owner, now)
        if job.state == JobState.TERMINATING:
            # The driver died while ending the job: finish ending it.
            self.terminate(job, row["reason"] or "terminated", now)
            return job
        if job.state != JobState.ACTIVE:
            # Nothing to dispatch: do not keep other processes from attaching.
            self.ledger.release_lease(spec.id, owner)
            return job
        running = {(tr.spec.id.lower(), str(tr.n)) for tr in job.tasks.values() if tr.state == TaskState.RUNNING}
        # A dead driver's task processes live on in sessions of their own: end them before
        # their tasks run again, so that no two copies of a task run (this host only).
        killed = kill_leftovers(job.pool, spec.id, running) if running else set()
        for tr in job.tasks.values():
            if tr.state == TaskState.RUNNING:
                left = ", its leftover processes killed" if (tr.key, str(tr.n)) in killed else ""
                self.batch.attempt(spec.id, tr.spec.id, tr.n, state="interrupted", end=now,
                                   message=f"the driving process stopped; run again on resume{left}")
                tr.requeues += 1
                self.set_state(job, tr, TaskState.ACTIVE, now, reason="resumed after the driver stopped",
                               requeues=tr.requeues)
            if tr.state == TaskState.PENDING:
                tr.unmet = sum(1 for d in job.graph.deps.get(tr.key, ()) if job.actions.get(d) != "satisfy")
                if any(job.actions.get(d) == "block" for d in job.graph.deps.get(tr.key, ())):
                    self.set_state(job, tr, TaskState.BLOCKED, now, reason="a dependency failed")
                    job.actions[tr.key] = "block"
                elif tr.unmet == 0:
                    self.set_state(job, tr, TaskState.ACTIVE, now)
            if tr.state == TaskState.ACTIVE:
                self.push_ready(job, tr)
        self.ledger.audit("resume", spec.id, f"owner {owner}")
        self.check_done(job, now)
        return job

    @staticmethod
    def _final_action(tr: TaskRun, failure: dict) -> str:
        from .outcome import dependency_action
        ok = tr.state == TaskState.SUCCEEDED
        return dependency_action(tr.spec, ok, tr.exit_code, None if ok else failure.get("category"))[0]

    @auditops.add_tasks
    def add_tasks(self, job_key: str, new: list, replace: bool = False) -> list[TaskRun]:
        """Validate and record tasks; a task equal to one the job has is a no-op."""
        job = self.jobs.get(job_key)
        if job is None:
            raise LeaseHeld(f"job {job_key!r} is dispatched by another process now; this process only watches it")
        table = tables(job)
        # Tasks of the job held in the ledger alone: those added again, and those depended on.
        self.load_known(job, [t.id for t in new] + [d for t in new for d in t.depends_on])
        if job.state != JobState.ACTIVE:
            # A re-run notebook or job file adds the same tasks again: that is a no-op, not an error.
            same = [job.tasks.get(t.id.lower()) for t in new]
            if all(old is not None and old.spec == t for old, t in zip(same, new)):
                return same
            raise SpecError("job", job.spec.id, f"is {job.state.value} ({job.reason}); it accepts no more tasks")
        slots = self.engine.spec.task_slots_per_node
        limit = int(_config.get("inline-arg-limit"))     # a call pickled larger keeps large arguments apart
        out: list = [None] * len(new)       # handles in the order given, no-ops included
        adding, replacing = [], []
        for i, spec in enumerate(new):
            if spec.multi_instance is not None:
                self.mi_check(spec)
            if spec.required_slots > slots:
                raise SpecError("required_slots", spec.required_slots,
                                f"task {spec.id!r} needs more slots than a node of pool {self.engine.name!r} has "
                                f"(task_slots_per_node={slots}); it could never run")
            for name, ref in spec.secrets.items():
                if ref.startswith("env:") and ref[4:] not in os.environ:
                    raise SpecError(f"secrets[{name!r}]", ref,
                                    f"environment variable {ref[4:]!r} is not set in this process")
            old = job.tasks.get(spec.id.lower())
            if old is not None:
                if old.spec == spec:
                    out[i] = old
                    continue
                if not replace:
                    raise SpecError("task id", spec.id,
                                    f"exists in job {job.spec.id!r} with a different spec (fields differ: "
                                    f"{', '.join(_differences(old.spec, spec))}); pass replace=True to replace it")
                if old.state == TaskState.RUNNING:
                    raise SpecError("task id", spec.id, "is running; it can be replaced once it ends")
                replacing.append(spec.id)
            if spec.python is not None and len(spec.python.payload) > limit:
                # Large arguments go by reference, never into the ledger. Imported only then:
                # staging brings fsspec, which a pool's start and its first small task do without.
                from ..staging.argstore import spec_by_reference
                spec = spec_by_reference(spec, self.engine.results_url, self.engine.storage_options)
            adding.append((i, spec))
        if not adding:
            return out
        job.graph.add([(s.id, s.depends_on) for _, s in adding], replacing, exists=table.__contains__)
        now = time.time()
        rows, runs = [], []
        # Waiting tasks the ready queue has room for are held at once, from the specs in hand:
        # written to the ledger and paged back in, each one's JSON was read again before it could
        # run (20 ms of the start of a job of 1,000 commands). Once one waits in the ledger alone,
        # the rest do too, so that they are paged in in the order they were added.
        room = 0 if table.cold else self.window() - len(self.ready)
        for i, spec in adding:
            old = job.tasks.pop(spec.id.lower(), None)
            if old is not None:
                job.counts[old.state] -= 1
                self._unsatisfy(job, old, now)
            tr = TaskRun(spec, job.next_seq, TaskState.PENDING)
            if old is not None:
                tr.n = old.n      # attempt numbers never repeat, so a late kill cannot hit the new one
            job.next_seq += 1
            acts = [job.actions.get(d) for d in job.graph.deps.get(tr.key, ())]
            tr.unmet = sum(1 for a in acts if a != "satisfy")
            if "block" in acts:
                tr.state = TaskState.BLOCKED
                job.actions[tr.key] = "block"
            elif tr.unmet == 0:
                tr.state = TaskState.ACTIVE
            job.counts[tr.state] += 1
            table.any = True
            if tr.state == TaskState.ACTIVE and spec_cold_able(spec) and not job.graph.dependents.get(tr.key) \
                    and old is None and (table.cold or room <= 0):   # (a replacing row may take its old row's id)
                table.cold = True           # it waits in the ledger alone, paged in as slots free up
            else:
                room -= 1
                job.tasks[tr.key] = tr
            rows.append((spec.id, tr.seq, task_json(spec), tr.state.value))
            runs.append(tr)
            out[i] = tr
        # Written before it is seen: the add returns only once the ledger has the tasks.
        self.ledger.add_tasks(job.spec.id, rows, now, replace_ids=replacing)
        for tr in runs:
            if tr.state == TaskState.ACTIVE and tr.key in table:
                self.push_ready(job, tr)
        self.events.append(TasksAdded(job.spec.id, len(runs), now, dict(Counter(t.state.value for t in runs))))
        return out

    def _unsatisfy(self, job: JobRun, old: TaskRun, now: float) -> None:
        """A replaced task that had satisfied its dependents no longer does: they wait for the new one."""
        if job.actions.pop(old.key, None) != "satisfy":
            return
        for key in job.graph.dependents.get(old.key, ()):
            dtr = job.tasks.get(key)
            if dtr is None:
                continue
            dtr.unmet += 1
            if dtr.state == TaskState.ACTIVE and dtr.retry_at is None and dtr.n == 0:
                self.set_state(job, dtr, TaskState.PENDING, now, reason=f"{old.spec.id} was replaced")

    @auditops.terminate
    def terminate(self, job: JobRun, reason: str, now: float, state: TaskState = TaskState.CANCELLED) -> None:
        """Kill the job's running processes, cancel the rest, end the job with ``reason``."""
        if job.state == JobState.COMPLETED or self.jobs.get(job.key) is not job:
            return
        job.state = JobState.TERMINATING
        self.batch.job(job.spec.id, state=job.state.value)
        self.events.append(JobStateChanged(job.spec.id, job.state.value, now, reason))
        self._kill_running(job)
        for tr in job.tasks.values():
            if tr.state not in TERMINAL_TASK_STATES:
                if tr.state == TaskState.RUNNING:
                    self.engine.task_ended(job, tr, now)
                    self.batch.attempt(job.spec.id, tr.spec.id, tr.n, state="terminated", end=now,
                                       category="terminated", message=f"job ended: {reason}")
                self.set_state(job, tr, state, now, reason=f"job ended: {reason}")
        self.cancel_cold(job, reason, now)
        self.complete(job, reason, now)

    def running_attempts(self, job: JobRun | None = None) -> dict[str, list]:
        """Worker address -> (job id, task id, attempt) of the attempts in flight (of ``job``, or all)."""
        by_address: dict[str, list] = {}
        for fut, node_id, members, _ in self.inflight.values():
            node = self.nodes.nodes.get(node_id)
            for job_key, task_key, n in members:
                run = self.jobs.get(job_key)
                if run is None or (job is not None and run is not job) or node is None or not node.address:
                    continue
                by_address.setdefault(node.address, []).append((run.spec.id, run.tasks[task_key].spec.id, n))
        return by_address

    def _kill_running(self, job: JobRun) -> None:
        """Stop the job's running attempts on their nodes (off this thread: see ``_stop_on``)."""
        for address, keys in self.running_attempts(job).items():
            threading.Thread(target=self._stop_on, args=(address, self.nodes.by_address.get(address), keys),
                             name=f"batchnb-stop-{self.engine.name}", daemon=True).start()

    def _stop_on(self, address: str, node_id: str | None, keys: list) -> None:
        """Kill attempts on one worker; restart it when a Python call's thread outlives the kill.

        Command tasks die with their process trees. A Python call running in a worker
        thread gets an exception raised in that thread, which stops Python code at
        once; a thread blocked in C code (a sleep, a read, a long numpy call) still
        runs after ``batchnb.kill-grace``, and only the end of its process stops it
        (Azure's terminate kills; a cancelled task that writes its file later would
        be a lie). Its nanny (or the local backend) starts the worker again; the
        node's other attempts are requeued, neither failed nor counted as retries.
        The task shows ``cancelled`` from the terminate on; its slot stays held
        until its thread or its process has ended. Runs on a thread of its own: it
        waits on the worker, which the dispatcher's thread never does.
        """
        from ..node import runner
        try:
            answer = self.client.run(runner.stop_attempts_soon, keys, _config.seconds("kill-grace"),
                                     workers=[address], on_error="return").get(address)
        except Exception as exc:  # noqa: BLE001 - the pool closes, or the worker is gone and its threads with it
            log.debug("could not stop attempts on %s: %s", address, exc)
            return
        if not isinstance(answer, (tuple, list)) or not answer[0]:
            return                # stopped (or the worker is gone, its threads with it)
        stuck, restartable = answer
        names = ", ".join(f"{j}/{t}" for j, t, _ in stuck)
        if not restartable:
            log.warning("batchnb: %s did not stop within batchnb.kill-grace and worker %s has nothing to "
                        "restart it: it runs on, its slot held until it ends", names, address)
            return
        try:
            doomed = self.call(self._restarting, node_id, address, names)
        except Exception:  # noqa: BLE001 - the pool closed meanwhile: its workers end with it
            return
        if doomed is None:
            return
        try:
            self.client.run(runner.restart_worker, workers=[address], on_error="return")
        except Exception as exc:  # noqa: BLE001 - it died before answering, as it should
            log.debug("restart of %s: %s", address, exc)
        self.post(self._restarted, node_id, doomed)

    def _restarting(self, node_id: str | None, address: str, names: str) -> list | None:
        """The node's worker is about to be restarted: it gets no new task meanwhile.

        Returns its Dask tasks in flight (requeued by ``_restarted`` once the worker is
        dead, so that no task runs twice), or None if it is gone already."""
        node = self.nodes.nodes.get(node_id) if node_id is not None else None
        if node is None or node.address != address:
            return None
        now = time.time()
        reason = f"its worker restarts: {names} did not stop within batchnb.kill-grace"
        doomed = [key for key, entry in self.inflight.items() if entry[1] == node_id]
        # Until the nanny's fresh worker joins (under a new address), as after a preemption.
        self.nodes.lost(node_id, NodeState.UNUSABLE if node.state == NodeState.UNUSABLE else NodeState.STARTING,
                        now)
        self._node_event(node, now, reason)
        log.warning("batchnb: node %s %s", node_id, reason)
        return doomed

    def _restarted(self, node_id: str, doomed: list) -> None:
        now = time.time()
        for key in doomed:
            entry = self.inflight.pop(key, None)
            if entry is None:
                continue          # it ended before the restart
            fut, _, members, slots = entry
            self.release([fut])
            self.nodes.give_back(node_id, key, slots, now)
            for job_key, task_key, n in members:   # a terminated task is ended already: skipped
                self.requeue(job_key, task_key, n, now, "its worker restarted to stop a terminated task",
                             crash=False)

    def complete(self, job: JobRun, reason: str, now: float) -> None:
        job.state, job.reason, job.ended = JobState.COMPLETED, reason, now
        self.batch.job(job.spec.id, state=job.state.value, reason=reason, ended=now)
        self.batch.event(now, "job", job.spec.id, None, job.state.value, {"reason": reason})
        self.events.append(JobStateChanged(job.spec.id, job.state.value, now, reason))
        self.batch.release_lease(job.spec.id, job.owner or self.engine.owner)
        self.engine.job_ended(job, now)
        self.preps.job_ended(job, now)     # its release task, on the nodes its preparation ran on
