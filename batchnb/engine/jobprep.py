"""Job preparation and release tasks, the driver's side: where and when they run, and their record.

A job with a :class:`~batchnb.JobPrep` gets its preparation task on a node
before its first task there: when the dispatcher places a task of the job on
a node where the preparation has not run, it starts the preparation there
instead (holding one of the node's slots) and the task waits, or goes to a
node that is prepared. With ``wait_for_success`` a node whose preparation
failed for good runs none of the job's tasks (the log says why), and once
no node is left that could, ``job.wait()`` raises
:class:`~batchnb.PoolStalled` naming the failure instead of waiting for
good; without it, tasks run there anyway. When the job ends (it completes
or is terminated), or its pool closes first, the :class:`~batchnb.JobRelease`
runs on each node that ran the preparation.

Each run is recorded in the ledger's events (kinds ``jobprep`` and
``jobrelease``, one per node and run, with every attempt's exit code and the
tails of its stdout and stderr): ``job.prep_runs()`` and
``job.release_runs()`` read them back as :class:`PrepRun` records, in this
process or any other. What runs on the node is :mod:`batchnb.node.jobprep`.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass

from .ledger import Batch
from .outcome import app_packages_of
from ..node.attempt import kill_attempts
from ..node.jobprep import prep_key, run_job_prep, run_job_release
from ..node.starttask import off_the_loop
from ..states import JobState, NodeState, TaskState

log = logging.getLogger("batchnb.jobprep")

PREP_EVENT, RELEASE_EVENT = "jobprep", "jobrelease"
_RUNNING, _SUCCEEDED, _FAILED = TaskState.RUNNING.value, TaskState.SUCCEEDED.value, TaskState.FAILED.value
#: a run whose node went away under it: run again when the node is back
_LOST = "interrupted"
#: nodes not up yet that may still prepare and run the job's tasks
_COMING = frozenset({NodeState.STARTING, NodeState.OFFLINE, NodeState.PREEMPTED})


@dataclass(frozen=True)
class PrepRun:
    """One run of a job's preparation (or release) task on one node, as the ledger has it.

    ``state`` is ``running``, ``succeeded``, ``failed`` or ``interrupted`` (its
    node went away); ``attempts`` holds one dict per attempt (``exit_code``,
    ``category``, ``message``, ``start``, ``end``, ``stdout``, ``stderr``,
    ``task_dir``).

    >>> run = PrepRun("jobprep", "dedicated-0", 1, "succeeded", 0.0, 1.0,
    ...               ({"attempt": 1, "exit_code": 0, "stdout": "ok\\n", "stderr": ""},))
    >>> run.exit_code, run.stdout
    (0, 'ok\\n')
    """

    kind: str
    node_id: str
    run: int
    state: str
    start: float
    end: float | None
    attempts: tuple = ()
    message: str | None = None

    def _last(self, name: str):
        return self.attempts[-1].get(name) if self.attempts else None

    @property
    def exit_code(self) -> int | None:
        return self._last("exit_code")

    @property
    def stdout(self) -> str:
        return self._last("stdout") or ""

    @property
    def stderr(self) -> str:
        return self._last("stderr") or ""


def prep_runs(ledger, job_id: str, kind: str = PREP_EVENT) -> list[PrepRun]:
    """The runs of a job's preparation (``kind="jobprep"``) or release (``"jobrelease"``) task."""
    runs: dict[tuple, PrepRun] = {}
    for row in ledger.job_events(job_id, (kind,)):
        if row["task_id"] is None:
            continue           # a note about the job (its tasks cannot run anywhere), not a run
        data = json.loads(row["data"]) if row["data"] else {}
        key = (row["task_id"], data.get("run", 0))
        first = runs.get(key)
        ended = row["state"] != _RUNNING
        runs[key] = PrepRun(kind, row["task_id"], data.get("run", 0), row["state"],
                            first.start if first else row["time"], row["time"] if ended else None,
                            tuple(data.get("attempts") or ()), data.get("message"))
    return list(runs.values())


class _NodePrep:
    __slots__ = ("node_id", "address", "state", "run", "key", "message")

    def __init__(self, node_id: str, address: str, run: int, key: str):
        self.node_id, self.address, self.run, self.key = node_id, address, run, key
        self.state, self.message = _RUNNING, None


class JobPreps:
    """The dispatcher's part for preparation and release tasks (on its thread, but ``close``)."""

    def __init__(self, dispatcher):
        self.d = dispatcher
        self.runs: dict[str, dict[str, _NodePrep]] = {}   # job key -> node id -> its preparation there
        #: job key -> (since, why) while the job's preparation failed on every node that could run its tasks
        self.blocked: dict[str, tuple[float, str]] = {}
        self._count = itertools.count(1)
        #: job key -> its release tasks under way (job.wait() returns once they ended)
        self.releasing: dict[str, set] = {}
        self._lock = threading.Lock()

    # -- placing a task --------------------------------------------------------------
    def place(self, job, tr, node, now: float):
        """The node for ``tr`` (``node``: the table's choice), or None while it waits for a preparation."""
        prep = job.spec.prep
        if prep is None or node is None:
            return node
        runs = self.runs.setdefault(job.key, {})
        slots = tr.spec.required_slots
        held = getattr(self.d.nodes, "held", ())     # nodes a waiting multi-instance task claims
        group = self.d.fallback_group(job, tr)        # dedicated only, after spot_fallback preemptions
        fits = [n for n in self.d.nodes.nodes.values() if n.free >= slots and n.node_id not in held
                and (group is None or n.group == group)]
        ready = [n for n in fits if self._ready(prep, self._status(prep, runs, n))]
        fresh = [n for n in fits if self._status(prep, runs, n) is None]
        if (ready or fresh) and self.blocked:
            self.blocked.pop(job.key, None)     # a node can run them, or may once prepared (a new one)
        if ready:
            if node in ready:
                return node
            pick = max if self.d.nodes.fill == "spread" else min
            return pick(ready, key=lambda n: n.free)
        if fresh:
            target = node if node in fresh else fresh[0]
            self._start(job, target, now)
            return target if not prep.wait_for_success and target.free >= slots else None
        self._check_blocked(job, runs, now)
        return None

    def ready_on(self, job, node) -> bool:
        """May a task of ``job`` ride in a bundle to ``node``?"""
        prep = job.spec.prep
        return prep is None or self._ready(prep, self._status(prep, self.runs.get(job.key, {}), node))

    @staticmethod
    def _ready(prep, status) -> bool:
        return status == _SUCCEEDED or (not prep.wait_for_success and status in (_RUNNING, _FAILED))

    @staticmethod
    def _status(prep, runs: dict, node) -> str | None:
        r = runs.get(node.node_id)
        if r is None:
            return None
        if r.address != node.address and r.state != _RUNNING and (prep.rerun_on_node_reboot
                                                                  or r.state != _SUCCEEDED):
            del runs[node.node_id]      # its worker restarted (Azure: the node rebooted): prepare it again
            return None
        return r.state

    def _check_blocked(self, job, runs: dict, now: float) -> None:
        """Note (and log once) when the preparation failed on every node that is up or coming."""
        nodes = [n for n in self.d.nodes.nodes.values() if n.schedulable or n.state in _COMING]
        failed = [runs.get(n.node_id) for n in nodes]
        # A node just asked for (a resize) is not in the table until the next poll: it is coming too.
        asked = set(self.d.engine.requested()) - set(self.d.nodes.nodes)
        if not nodes or asked or job.spec.prep.wait_for_success is False or not all(
                r is not None and r.state == _FAILED and r.address == n.address for r, n in zip(failed, nodes)):
            self.blocked.pop(job.key, None)       # e.g. a node joins that may prepare and run them
            return
        if job.key in self.blocked:
            return
        why = (f"the preparation task of job {job.spec.id!r} failed on every node that could run its tasks ("
               + "; ".join(f"{r.node_id}: {r.message}" for r in failed) + "); its tasks wait: resize the pool "
               "or terminate the job")
        log.warning("%s", why)
        self.blocked[job.key] = (now, why)
        self.d.batch.event(now, PREP_EVENT, job.spec.id, None, "blocked", {"message": why})

    # -- running the preparation ---------------------------------------------------------
    def _start(self, job, node, now: float) -> None:
        run = next(self._count)
        r = _NodePrep(node.node_id, node.address, run, f"bnb-jobprep-{job.spec.id}-{node.node_id}-{run}")
        self.runs[job.key][node.node_id] = r
        self.d.nodes.take(node, r.key, 1, now)
        self.d.batch.event(now, PREP_EVENT, job.spec.id, node.node_id, _RUNNING, {"run": run})
        engine = self.d.engine
        args = (job.spec.id, job.spec.prep, engine.name, engine.node_root, engine.storage_options, node.node_id,
                node.group, app_packages_of(engine.spec))

        def on_node():
            try:
                out = engine.client.run(off_the_loop, run_job_prep, *args, workers=[node.address])
                attempts, problem = out.get(node.address), None
            except Exception as exc:  # noqa: BLE001 - its node went away under it: prepare again when back
                attempts, problem = None, f"{type(exc).__name__}: {exc}"
            self.d.post(self._prep_done, job.key, r, attempts, problem)
        threading.Thread(target=on_node, name=f"batchnb-jobprep-{node.node_id}", daemon=True).start()
        log.info("job %s: preparation task starts on %s", job.spec.id, node.node_id)

    def _prep_done(self, job_key: str, r: _NodePrep, attempts: list | None, problem: str | None) -> None:
        now = time.time()
        self.d.nodes.give_back(r.node_id, r.key, 1, now)
        job = self.d.jobs.get(job_key)
        job_id = job.spec.id if job is not None else job_key
        if not attempts:
            r.state, r.message = _LOST, problem or "its node went away"
            if self.runs.get(job_key, {}).get(r.node_id) is r:
                del self.runs[job_key][r.node_id]
        else:
            last = attempts[-1]
            ok = last.get("category") is None and last.get("exit_code") == 0
            r.state = _SUCCEEDED if ok else _FAILED
            r.message = None if ok else (f"{last.get('message')} after {len(attempts)} attempt(s)"
                                         + (f"; stderr: {last['stderr'].strip()[-300:]}"
                                            if (last.get("stderr") or "").strip() else ""))
        self.d.batch.event(now, PREP_EVENT, job_id, r.node_id, r.state,
                           {"run": r.run, "attempts": attempts or [], "message": r.message})
        if r.state == _FAILED and job is not None and job.state == JobState.ACTIVE:   # not one its job's end killed
            keep_off = job.spec.prep.wait_for_success
            log.warning("job %s: its preparation task failed on %s (%s); %s", job_id, r.node_id, r.message,
                        "no task of the job runs there" if keep_off else "its tasks run there anyway "
                        "(wait_for_success=False)")

    # -- the job ends: release ------------------------------------------------------------
    def job_ended(self, job, now: float) -> None:
        """On the dispatcher's thread: run the release task on each node that ran the preparation."""
        self.blocked.pop(job.key, None)
        runs = self.runs.pop(job.key, None)
        if job.spec.prep is None or not runs:
            return
        self._release(job, list(runs.values()))

    def _release(self, job, runs: list) -> None:
        job_id, spec = job.spec.id, job.spec
        engine = self.d.engine
        apps = app_packages_of(engine.spec)
        for r in runs:
            node = self.d.nodes.nodes.get(r.node_id)
            address = node.address if node is not None and node.address else None
            if address is None:
                continue           # the node is gone, and its folders with it
            if spec.release is None:
                if r.state == _RUNNING:    # a preparation still running when its job ended stops
                    threading.Thread(target=self._kill_prep, args=(job_id, address), daemon=True).start()
                continue
            t = threading.Thread(target=self._release_on, args=(job, spec.release, r.node_id, address,
                                                                  node.group, apps),
                                 name=f"batchnb-jobrelease-{r.node_id}", daemon=True)
            with self._lock:
                self.releasing.setdefault(job.key, set()).add(t)
            t.start()

    def _kill_prep(self, job_id: str, address: str) -> None:
        try:
            self.d.client.run(kill_attempts, [prep_key(job_id)], workers=[address])
        except Exception as exc:  # noqa: BLE001 - the worker is gone, and its processes with it
            log.debug("could not stop the preparation task of %s on %s: %s", job_id, address, exc)

    def _release_on(self, job, release, node_id: str, address: str, group, apps: tuple) -> None:
        """On a thread of its own: run the release on one node and record it (straight to the ledger:
        the dispatcher may have stopped by the time it ends, when the pool closes)."""
        try:
            self._release_one(job.spec.id, release, node_id, address, group, apps)
        finally:
            with self._lock:
                left = self.releasing.get(job.key, set())
                left.discard(threading.current_thread())
                if not left:
                    self.releasing.pop(job.key, None)
            job.notify()

    def _release_one(self, job_id: str, release, node_id: str, address: str, group, apps: tuple) -> None:
        engine = self.d.engine
        run = next(self._count)
        self._record(time.time(), job_id, node_id, _RUNNING, {"run": run})
        try:
            out = engine.client.run(off_the_loop, run_job_release, job_id, release, engine.name, engine.node_root,
                                    node_id, group, apps, workers=[address])
            rec, problem = out.get(address), None
        except Exception as exc:  # noqa: BLE001 - the node went away under it
            rec, problem = None, f"{type(exc).__name__}: {exc}"
        ok = rec is not None and rec.get("category") is None and rec.get("exit_code") == 0
        message = None if ok else (problem or rec.get("message"))
        if not ok:
            log.warning("job %s: its release task failed on %s: %s", job_id, node_id, message)
        self._record(time.time(), job_id, node_id, _SUCCEEDED if ok else (_LOST if rec is None else _FAILED),
                     {"run": run, "attempts": [rec] if rec else [], "message": message})

    def _record(self, t: float, job_id: str, node_id: str, state: str, data: dict) -> None:
        batch = Batch()
        batch.event(t, RELEASE_EVENT, job_id, node_id, state, data)
        try:
            self.d.ledger.commit(batch)
        except Exception:  # noqa: BLE001 - a record lost must not stop the release or the pool closing
            log.exception("batchnb could not record the release task of job %s on %s", job_id, node_id)

    def close(self) -> None:
        """The pool closes (its dispatcher has stopped): the jobs still active release their nodes
        before they go, and every release under way ends first (each is bounded by its wall clock)."""
        for job_key, runs in list(self.runs.items()):
            job = self.d.jobs.get(job_key)
            if job is not None and runs:
                self._release(job, list(runs.values()))
        self.runs.clear()
        with self._lock:
            under_way = [t for threads in self.releasing.values() for t in threads]
        for t in under_way:
            t.join()
