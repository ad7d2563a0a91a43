"""What the dispatcher does when an attempt ends: retry, requeue, satisfy or block.

A mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`; it runs on the
dispatcher's thread only, so it needs no locks.
"""

from __future__ import annotations

import json
import logging
import os
import random

from .. import _config
from ..node import runner
from .events import BytesMoved, TaskStateChanged
from .ledger_batch import attempt_data
from ..node.runner import AttemptRecord, AttemptRequest
from ..states import TERMINAL_TASK_STATES, JobState, NodeGroup, TaskState
from .spotfallback import has_dedicated

log = logging.getLogger("batchnb.dispatch")

#: each state's word, looked up (an enum's ``.value`` costs ten times as much, four times a task)
_WORD = {state: state.value for state in TaskState}


def dependency_action(spec, succeeded: bool, exit_code, category) -> tuple[str, str]:
    """(dependency action, job action) for a task's final outcome, with Azure's defaults."""
    opts = spec.exit_conditions.options_for(exit_code, category) if spec.exit_conditions else None
    dep = opts.dependency_action if opts is not None and opts.dependency_action else (
        "satisfy" if succeeded else "block")
    return dep, (opts.job_action if opts is not None else "none")


def app_packages_of(pool) -> tuple:
    """A pool spec's application packages as an attempt request carries them."""
    return tuple((p.name, p.version, None) for p in pool.app_packages)


def retry_delay(policy, tries: int, record: AttemptRecord, storage_floor: float, rng=random.random) -> float:
    """Seconds before the next attempt of a task whose ``tries``-th attempt failed as ``record`` says.

    The task's :class:`~batchnb.spec.Retry` decides, except after an attempt
    that failed because storage stayed unreachable through its in-attempt
    retries (``batchnb.staging-retry-for``): then the task waits at least
    ``storage_floor`` seconds, spread up by the Retry's jitter, even when its
    Retry has no delay. Retrying at once would meet the same outage, so a
    storage blip would spend a task's retries in seconds; the spread keeps the
    many tasks such an outage fails from all trying again at one moment.

    >>> from batchnb.spec import Retry
    >>> rec = AttemptRecord("j", "t", 1, "n", 0.0, category="upload", transient=True)
    >>> retry_delay(Retry(max=2), 1, rec, storage_floor=30.0, rng=lambda: 0.0)
    30.0
    """
    delay = policy.delay_before(tries, rng=rng)
    if record.transient and record.category in (runner.PREPROCESSING, runner.UPLOAD):
        delay = max(delay, storage_floor * (1 + policy.jitter * rng()))
    return delay


class Outcomes:
    # -- state changes (the one place task state is set) ------------------------
    def set_state(self, job, tr, state: TaskState, now: float, reason: str | None = None, **cols) -> None:
        prev = tr.state
        tr.state = state
        job.counts[prev] -= 1
        job.counts[state] += 1
        if state in TERMINAL_TASK_STATES:
            cols["ended"] = now
        word = _WORD[state]
        self.batch.task(job.spec.id, tr.spec.id, state=word, updated=now, **cols)
        self.batch.event(now, "task", job.spec.id, tr.spec.id, word,
                         attempt_data(tr.n, tr.node, reason) if (reason or tr.n) else None)
        self.events.append(TaskStateChanged(job.spec.id, tr.spec.id, word, _WORD[prev], now, tr.n, tr.node,
                                            tr.exit_code, reason))
        if prev == TaskState.RUNNING and state != TaskState.RUNNING and tr.spec.multi_instance is not None:
            self.mi_ended(job, tr, state, now)    # its other instances stopped, its nodes freed

    def dispatchable(self, job, tr) -> bool:
        # A task waiting in a queued bundle (queued.py) is dispatched already, while that bundle is.
        return job is not None and job.state == JobState.ACTIVE and tr.state == TaskState.ACTIVE \
            and tr.retry_at is None and tr.queued is None

    def fallback_group(self, job, tr) -> str | None:
        """The node group ``tr`` must run in (dedicated after ``spot_fallback`` preemptions), or None."""
        if not self.fallback.due((job.key, tr.key)) or not has_dedicated(self.nodes.nodes.values(),
                                                                          self.engine.requested()):
            return None
        return NodeGroup.DEDICATED.value

    @staticmethod
    def bundleable(tr) -> bool:
        return tr.spec.required_slots == 1 and tr.spec.multi_instance is None

    # -- starting an attempt -----------------------------------------------------
    def make_request(self, job, tr, node, now: float, slots: float | None = None) -> AttemptRequest | None:
        # slots: what the attempt holds of its node (1/n of one slot for each of n tasks in one Dask
        # task), recorded so that cost_from_ledger prices it as the live meter does.
        spec = tr.spec
        tr.n += 1
        tr.node = node.node_id
        tr.dispatched = now
        secrets, refs = {}, {}
        for name, ref in spec.secrets.items():
            if not ref.startswith("env:"):
                refs[name] = ref        # file: and keyvault:// are the node's to read, as the attempt starts
                continue
            value = os.environ.get(ref[4:])
            if value is None:
                # Not retryable: the variable will not appear by itself.
                self.set_state(job, tr, TaskState.RUNNING, now, attempts=tr.n, node=tr.node)
                self.fail_hard(job.key, tr.key, tr.n, f"secrets[{name!r}]: environment variable {ref[4:]!r} "
                               "is not set in the driving process", now, category=runner.PREPROCESSING)
                return None
            secrets[name] = value
        req = AttemptRequest(
            job_id=job.spec.id, task_id=spec.id, attempt=tr.n, pool_id=self.engine.name,
            command=spec.command, python=spec.python.payload if spec.python else None,
            env=spec.env, secrets=secrets, secret_refs=refs, inputs=spec.inputs, outputs=spec.outputs,
            max_wall_clock=spec.max_wall_clock, node_root=self.engine.node_root,
            storage_options=self.engine.storage_options,
            result_url=f"{self.engine.results_url}/{job.spec.id}/{spec.id}/{tr.n}.pkl",
            result_inline_max=self._inline_max,
            dep_results=self._dep_results(job, spec) if spec.python else {},
            app_packages=self.app_packages(), node_group=node.group, container=spec.container,
            container_runtime=self.engine.spec.container_runtime)
        self.set_state(job, tr, TaskState.RUNNING, now, attempts=tr.n, node=tr.node)
        self.batch.attempt(job.spec.id, spec.id, tr.n, node=tr.node, state="running", dispatched=now,
                           slots=spec.required_slots if slots is None else slots)
        self.engine.task_started(job, tr, node, now)
        return req

    def app_packages(self) -> tuple:
        """The pool's application packages as a request carries them (made once per pool spec)."""
        pool = self.engine.spec
        if getattr(self, "_app_packages", (None,))[0] is not pool:
            self._app_packages = (pool, app_packages_of(pool))
        return self._app_packages[1]

    def _dep_results(self, job, spec) -> dict:
        out = {}
        for dep in spec.depends_on:
            dtr = job.tasks.get(dep.lower())
            if dtr is not None and dtr.has_result:
                row = self.ledger.task(job.spec.id, dep)
                if row is not None:
                    out[dtr.spec.id] = row["result_url"] or row["result"]
        return out

    # -- an attempt ended --------------------------------------------------------
    def finished(self, record: AttemptRecord, now: float) -> None:
        job, tr = self._lookup(record.job_id.lower(), record.task_id.lower())
        if tr is None or tr.n != record.attempt or tr.state != TaskState.RUNNING:
            return  # stale: the attempt was requeued or its job terminated
        if tr.spec.multi_instance is not None:
            record = self.mi_outcome(job, tr, record, now)
            if record is None:
                return  # one instance's coordination ended; the task goes on
        self.engine.task_ended(job, tr, now)
        tr.exit_code = record.exit_code
        ok = record.succeeded
        self.batch.attempt(job.spec.id, tr.spec.id, record.attempt, state="succeeded" if ok else "failed",
                           start=record.start, end=record.end, exit_code=record.exit_code,
                           category=record.category, message=record.message, task_dir=record.task_dir,
                           bytes_in=record.bytes_in, bytes_out=record.bytes_out,
                           stage_in_seconds=record.stage_in_seconds, stage_out_seconds=record.stage_out_seconds,
                           stdout_tail=record.stdout_tail, stderr_tail=record.stderr_tail)
        for direction, nbytes, secs in (("in", record.bytes_in, record.stage_in_seconds),
                                        ("out", record.bytes_out, record.stage_out_seconds)):
            if nbytes:
                self.events.append(BytesMoved(job.spec.id, tr.spec.id, direction, nbytes, secs, now))
        self._node_health(record)
        if record.category == runner.TERMINATED:
            self.set_state(job, tr, TaskState.CANCELLED, now, reason=record.message)
            self.check_done(job, now)
            return
        if ok:
            tr.has_result = record.result is not None or record.result_url is not None
            self.set_state(job, tr, TaskState.SUCCEEDED, now, exit_code=0, result=record.result,
                           result_url=record.result_url, failure=None)
            self.resolve(job, tr, True, 0, None, now)
            return
        tr.tries += 1
        failure = json.dumps({"category": record.category, "message": record.message, "node": record.node_id})
        policy = job.retry_policy(tr.spec)
        if job.state == JobState.ACTIVE and policy.allows(tr.tries):
            delay = retry_delay(policy, tr.tries, record, _config.seconds("staging-task-retry-delay"))
            self.set_state(job, tr, TaskState.ACTIVE, now, reason=f"retry after {record.message}",
                           exit_code=record.exit_code, failure=failure)
            log.info("job %s: task %s attempt %d failed (%s); retry %d in %.1fs", job.spec.id, tr.spec.id,
                     record.attempt, record.message or record.category, tr.tries, max(0.0, delay))
            if delay <= 0:
                self.push_ready(job, tr)
            else:
                tr.retry_at = now + delay
                n = tr.n
                self.at(tr.retry_at, lambda: self._retry_due(job, tr, n))
            return
        tr.failure = record.message
        self.set_state(job, tr, TaskState.FAILED, now, reason=record.message, exit_code=record.exit_code,
                       failure=failure)
        log.info("job %s: task %s failed after %d attempt(s): %s", job.spec.id, tr.spec.id, record.attempt,
                 record.message or record.category)
        self.resolve(job, tr, False, record.exit_code, record.category, now)

    def _retry_due(self, job, tr, n: int) -> None:
        if tr.n == n and tr.retry_at is not None:
            tr.retry_at = None
            if tr.state == TaskState.ACTIVE:
                self.push_ready(job, tr)

    def _node_health(self, record: AttemptRecord) -> None:
        node = self.nodes.nodes.get(record.node_id or "")
        if node is None:
            return
        if record.category in runner.NOT_TASK_FAULT:
            self.infra_failure(node, f"{record.category}: {record.message}")
        else:
            node.infra_failures = 0

    def resolve(self, job, tr, succeeded: bool, exit_code, category, now: float) -> None:
        """Apply the final outcome to the dependents and the job (exit conditions)."""
        dep_action, job_action = dependency_action(tr.spec, succeeded, exit_code, category)
        job.actions[tr.key] = dep_action
        if dep_action == "satisfy":
            for key in job.graph.dependents.get(tr.key, ()):
                dtr = job.tasks[key]
                dtr.unmet -= 1
                if dtr.unmet == 0 and dtr.state == TaskState.PENDING:
                    self.set_state(job, dtr, TaskState.ACTIVE, now)
                    self.push_ready(job, dtr)
        else:
            reason = f"dependency {tr.spec.id} {tr.state.value}"
            failure = json.dumps({"category": "blocked", "message": reason})
            frontier = list(job.graph.dependents.get(tr.key, ()))
            while frontier:   # breadth first; a blocked task's own dependents are blocked already
                key = frontier.pop()
                dtr = job.tasks[key]
                if dtr.state != TaskState.PENDING:
                    continue
                self.set_state(job, dtr, TaskState.BLOCKED, now, reason=reason, failure=failure)
                job.actions[key] = "block"
                frontier.extend(job.graph.dependents.get(key, ()))
        if job_action in ("terminate", "disable") and job.state == JobState.ACTIVE:
            self.terminate(job, "task_failed", now)
        self.check_done(job, now)

    def requeue(self, job_key: str, task_key: str, n: int, now: float, reason: str, crash: bool = True,
                preempted: bool = False) -> None:
        """The node went away under a running attempt: run it again; it is not a retry.

        Preemptions requeue without limit, as in Azure; losses that may be the
        task's own doing (its worker died or restarted) requeue at most
        ``batchnb.max-node-losses`` times, then the task fails (category crash).
        """
        job, tr = self._lookup(job_key, task_key)
        if self.queued_back(job, tr, n) or tr is None or tr.n != n or tr.state != TaskState.RUNNING:
            return
        if crash:
            tr.losses += 1
            if tr.losses > int(_config.get("max-node-losses")):
                self.engine.task_ended(job, tr, now)
                self.fail_hard(job_key, task_key, n, f"its node was lost under it {tr.losses} times "
                               f"(last: {reason}); does the task kill its worker, e.g. by running out of memory?",
                               now)
                return
        self.engine.task_ended(job, tr, now)
        self.batch.attempt(job.spec.id, tr.spec.id, n, state="requeued", end=now, category=runner.NODE_LOST,
                           message=reason)
        tr.requeues += 1
        if preempted:       # counted apart from retries and other requeues: see spotfallback.py
            self.fallback.preempted((job_key, task_key))
        self.set_state(job, tr, TaskState.ACTIVE, now, reason=f"requeued: {reason}", requeues=tr.requeues)
        self.push_ready(job, tr)

    def crashed(self, job_key: str, task_key: str, n: int, node_id: str, reason: str, now: float) -> None:
        """The Dask task failed outside the runner (worker crash, lost result)."""
        job, tr = self._lookup(job_key, task_key)
        if self.queued_back(job, tr, n):
            return          # it never started
        node = self.nodes.nodes.get(node_id)
        if node is None or node.address is None:
            self.requeue(job_key, task_key, n, now, reason)
            return
        if tr is not None:
            self.finished(AttemptRecord(job.spec.id, tr.spec.id, n, node_id, tr.dispatched or now, now,
                                        category=runner.CRASH, message=reason), now)

    def fail_hard(self, job_key: str, task_key: str, n: int, message: str, now: float,
                  category: str = runner.CRASH) -> None:
        """End a running attempt as a final failure, with no retry."""
        job, tr = self._lookup(job_key, task_key)
        if tr is None or tr.n != n or tr.state != TaskState.RUNNING:
            return
        self.batch.attempt(job.spec.id, tr.spec.id, n, state="failed", end=now, category=category, message=message)
        tr.failure = message
        self.set_state(job, tr, TaskState.FAILED, now, reason=message,
                       failure=json.dumps({"category": category, "message": message, "node": tr.node}))
        log.info("job %s: task %s failed: %s", job.spec.id, tr.spec.id, message)
        self.resolve(job, tr, False, None, category, now)

    def check_done(self, job, now: float) -> None:
        if job.state == JobState.ACTIVE and job.tasks and job.idle \
                and job.spec.on_all_tasks_complete == "terminate":
            self.complete(job, "all_tasks_complete", now)
