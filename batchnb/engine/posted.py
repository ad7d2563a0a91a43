"""Tasks added without waiting for the dispatcher: ``job.submit`` in a loop costs no round trip per call.

A plain add (:meth:`Posted.offer`) is checked at the call, on the caller's thread:
a spec that does not validate raised already when it was made; a task id the
job may have already (the hashes of a job's ids are kept from its first such
add on, in memory, kept up to date by :attr:`Ledger.adding_hooks`), a dependency
it does not have (neither queued here, nor added through here lately, nor in
the ledger), a replace, a multi-instance task, secrets, more slots than a node
has, a job not active or not dispatched by this process all take the usual
path instead (:meth:`Dispatcher.call`, which answers with the refusal, such as
another spec under a taken id, or the no-op of the same spec again). What passes is queued: the dispatcher adds the
queued tasks of a job together in its next turn, one ``add_tasks`` call (one
ledger transaction, one audit record) for many submits. The caller's thread
never waits on the dispatcher or on SQLite for a submit whose dependencies it
queued itself (a chain): each such wait would hand the GIL to the busy
dispatcher for a switch interval.

What the caller reads next shows its add: the ledger's reads (:attr:`Ledger.barriers`)
first wait until every add queued before them is recorded, in any thread (``await job``
waits in an executor's thread) but the dispatcher's own and Dask's event loop (named
"IO loop"), which the dispatcher itself waits on. An add the dispatcher still refuses (the job ended meanwhile) is
raised to the thread that queued it at its next add or read; queued adds that
depend on it are refused with it.
"""

from __future__ import annotations

import contextvars
import logging
import threading

from ..errors import SpecError
from ..states import JobState

log = logging.getLogger("batchnb.dispatch")


class Posted:
    """The dispatcher's queue of adds that were not waited for (see the module's docstring)."""

    def __init__(self, disp):
        self.disp = disp
        self._cond = threading.Condition(threading.Lock())
        self._queue: list = []           # (job key, spec, context, thread id), in the order queued
        self._kicked = False             # a drain is queued on the dispatcher
        self.sent = 0                    # adds queued so far
        self._drained = 0                # of them, added by the dispatcher (recorded at its turn's end)
        self.done = 0                    # of them, recorded in the ledger
        self._ids: dict[str, dict[str, int]] = {}    # job key -> queued task id (lower) -> how many
        self._errors: dict[int, list] = {}           # thread id -> refusals not yet raised to it
        self._recent: dict[str, dict[str, None]] = {}   # job key -> ids added through here lately
        self._refused: dict[str, set[str]] = {}         # job key -> ids whose queued add was refused
        self._known: dict[str, set[int]] = {}           # job key -> hashes of every id it has or is queued
        disp.ledger.adding_hooks.append(self._adding)

    # -- the caller's side -----------------------------------------------------------------------
    def offer(self, run, spec) -> bool:
        """Queue the add of ``spec`` to job ``run``; False when it must take the waited-for path."""
        disp = self.disp
        if spec.multi_instance is not None or spec.secrets or not disp._thread.is_alive() \
                or threading.current_thread() is disp._thread \
                or spec.required_slots > disp.engine.spec.task_slots_per_node \
                or disp.jobs.get(run.key) is not run or run.state != JobState.ACTIVE \
                or getattr(spec.depends_on, "ranges", ()) or not all(isinstance(d, str) for d in spec.depends_on):
            # A range of ids (TaskIdRange) is checked by the dispatcher as a range: walked and
            # looked up here id by id, a range of two million took half a minute to be refused.
            return False
        self.raise_errors()
        key = spec.id.lower()
        known = self._known.get(run.key)
        if known is None:
            known = self._know(run)
        with self._cond:
            queued = self._ids.get(run.key, {})
            if hash(key) in known:          # it has the id (or one of the same hash): let the dispatcher say
                return False
            unknown = {d.lower() for d in spec.depends_on} - queued.keys() - self._recent.get(run.key, {}).keys()
            # Dependencies added some other way: the one read of the ledger a submit may make.
            if unknown and unknown - disp.ledger.task_ids_in(run.spec.id, list(unknown)):
                return False
            self._refused.get(run.key, set()).discard(key)      # added again: no longer refused
            self._queue.append((run.key, spec, contextvars.copy_context(), threading.get_ident()))
            self._ids.setdefault(run.key, {})[key] = queued.get(key, 0) + 1
            known.add(hash(key))
            self.sent += 1
            kick, self._kicked = not self._kicked, True
        if kick:
            disp.post(self._drain)
        return True

    def _know(self, run) -> set:
        """The hashes of the job's task ids, read once; from then on kept by :meth:`_adding`."""
        with self._cond:
            known = self._known.setdefault(run.key, set())
        found = {hash(tid) for tid in self.disp.ledger.task_ids(run.spec.id)}
        with self._cond:
            known |= found
        return known

    def _adding(self, job_id: str, rows: list) -> None:
        known = self._known.get(job_id.lower())
        if known is not None:
            with self._cond:
                known.update(hash(r[0].lower()) for r in rows)

    def wait(self) -> None:
        """Return once the adds queued so far are in the ledger; raise what the dispatcher refused of
        this thread's adds."""
        if self.done < self.sent:
            me = threading.current_thread()
            if me is self.disp._thread or me.name.startswith("IO loop"):
                return
            target = self.sent
            with self._cond:
                while self.done < target and self.disp._thread.is_alive():
                    self._cond.wait(0.5)
        self.raise_errors()

    def raise_errors(self) -> None:
        if not self._errors:
            return
        with self._cond:
            errors = self._errors.pop(threading.get_ident(), None)
        if errors:
            raise errors[0]

    # -- the dispatcher's side ---------------------------------------------------------------------
    def _drain(self) -> None:
        with self._cond:
            queue, self._queue, self._kicked = self._queue, [], False
        i = 0
        while i < len(queue):
            job_key, _, ctx, thread = queue[i]
            j = i + 1
            while j < len(queue) and queue[j][0] == job_key and queue[j][3] == thread:
                j += 1
            self._add(job_key, [q[1] for q in queue[i:j]], ctx, thread)
            i = j
        with self._cond:
            for job_key, spec, _, _ in queue:
                if spec.id.lower() not in self._refused.get(job_key, ()):
                    recent = self._recent.setdefault(job_key, {})
                    recent[spec.id.lower()] = None
                    if len(recent) > 10_000:      # a chain needs its last few; a loop of a million, not all
                        del recent[next(iter(recent))]
                ids = self._ids.get(job_key, {})
                key = spec.id.lower()
                ids[key] = ids.get(key, 1) - 1
                if ids[key] <= 0:
                    ids.pop(key, None)
                if not ids:
                    self._ids.pop(job_key, None)
            self._drained += len(queue)

    def _add(self, job_key: str, new: list, ctx, thread: int) -> None:
        refused = self._refused.get(job_key, set())
        if refused and any(d.lower() in refused for s in new for d in s.depends_on):
            for spec in new:      # those behind a refused task are refused with it
                bad = [d for d in spec.depends_on if d.lower() in refused]
                if bad:
                    self._refuse(job_key, spec, thread, SpecError(
                        "depends_on", bad[0], f"task {spec.id!r} depends on a task whose add was refused"))
                else:
                    self._add(job_key, [spec], ctx, thread)
            return
        try:
            ctx.run(self.disp.add_tasks, job_key, new)
        except Exception as exc:  # noqa: BLE001 - raised to the thread that queued it
            if len(new) > 1:      # one bad task must not refuse the others: add them one by one
                for spec in new:
                    self._add(job_key, [spec], ctx, thread)
                return
            self._refuse(job_key, new[0], thread, exc)

    def _refuse(self, job_key: str, spec, thread: int, exc: BaseException) -> None:
        log.debug("batchnb: a queued add of %s was refused: %s", spec.id, exc)
        with self._cond:
            self._refused.setdefault(job_key, set()).add(spec.id.lower())
            self._errors.setdefault(thread, []).append(exc.with_traceback(None))

    def recorded(self) -> None:
        """The dispatcher's turn is in the ledger: the adds it drained are seen from now on."""
        if self.done != self._drained:
            with self._cond:
                self.done = self._drained
                self._cond.notify_all()

    def closed(self) -> None:
        """The dispatcher stopped: nobody waits for adds it will never make."""
        if self._adding in self.disp.ledger.adding_hooks:
            self.disp.ledger.adding_hooks.remove(self._adding)
        with self._cond:
            self.done = self._drained = self.sent
            self._cond.notify_all()
