"""Results: finished Dask futures, collected without the dispatcher ever waiting on a worker.

A mixin of :class:`~batchnb.engine.dispatcher.Dispatcher`, run on its thread. Fetching a
result and cancelling a future talk to workers that may be dead (a result pinned to a worker
that died makes a gather wait for good, "no-worker"): both run on threads of their own, and
what they learn comes back to the dispatcher's queue as a ``"gathered"`` item.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time


log = logging.getLogger("batchnb.dispatch")


class Results:
    """Needs the dispatcher's ``client``, ``nodes``, ``inflight``, ``_q``, ``_gatherer``,
    ``_releaser``, ``_gathering``, ``_counter``, ``_result_timeout`` and the outcome methods."""

    def release(self, futures: list) -> None:
        """Cancel these Dask futures without waiting on the scheduler (off this thread)."""
        if futures:
            try:
                self._releaser.submit(self._release_now, list(futures))
            except RuntimeError:      # closed: the client's close releases them anyway
                pass

    def _release_now(self, futures: list) -> None:
        try:
            self.client.cancel(futures)
        except Exception as exc:  # noqa: BLE001 - a closing client or a gone scheduler: nothing to release
            log.debug("could not cancel %d futures: %s", len(futures), exc)


    def _collect(self, futures: list) -> None:
        now = time.time()
        finished = []
        for fut in futures:
            entry = self.inflight.pop(fut.key, None)
            if entry is None:
                continue          # requeued or cancelled already
            if fut.status == "finished":
                # Its slot stays held until the result is recorded: the attempt has not ended
                # for the ledger, the views or the cost meter before then.
                finished.append((fut, entry))
                continue
            self.nodes.give_back(entry[1], fut.key, entry[3], now)
            if fut.status == "error":       # the Dask task itself failed (the runner never raises)
                reason = self._error_text(fut)
                for job_key, task_key, n in entry[2]:
                    self.crashed(job_key, task_key, n, entry[1], reason, now)
            else:                             # cancelled, or its result was lost with its worker
                self.release([fut])
                for job_key, task_key, n in entry[2]:
                    self.requeue(job_key, task_key, n, now, f"the Dask task was {fut.status}")
        if not finished:
            return
        # Results are fetched off this thread: a result pinned to a worker that just died would
        # make a gather wait for good ("no-worker"). They come back as a "gathered" item; those
        # not back within result-timeout are run again.
        self._fetch(finished, now)

    def _new_gatherer(self) -> cf.ThreadPoolExecutor:
        return cf.ThreadPoolExecutor(1, thread_name_prefix=f"batchnb-gather-{self.engine.name}")

    def _fetch(self, finished: list, now: float) -> None:
        token = next(self._counter)
        self._gathering[token] = finished
        self._start_fetch(token, finished)
        self.at(now + self._result_timeout, lambda: self._gather_expired(token))

    def _start_fetch(self, token: int, finished: list) -> None:
        self._gatherer.submit(self._gather, token, [f for f, _ in finished])

    def _gather(self, token: int, futures: list) -> None:
        try:
            results = self.client.gather(futures, errors="raise")
        except Exception:  # noqa: BLE001 - one lost result: take them one by one
            results = [self._gather_one(f) for f in futures]
        self._q.put(("gathered", token, results))

    def _gather_expired(self, token: int) -> None:
        finished = self._gathering.pop(token, None)
        if finished is None:
            return
        now = time.time()
        # The gatherer's thread is most likely still waiting on this fetch (a scheduler trying
        # to reach the dead worker waits out its connect timeout): the fetches queued behind it
        # would expire too, run again and queue behind it again. They move to a new thread and
        # keep their deadlines (moved with new ones, fetches that keep meeting dead workers would
        # put each other's off for good); the stuck one ends by itself, what it brings is ignored.
        stuck, self._gatherer = self._gatherer, self._new_gatherer()
        stuck.shutdown(wait=False, cancel_futures=True)
        for queued, waiting in list(self._gathering.items()):
            self._start_fetch(queued, waiting)
        self.release([f for f, _ in finished])
        for fut, entry in finished:
            self.nodes.give_back(entry[1], fut.key, entry[3], now)
            for job_key, task_key, n in entry[2]:
                # The attempt finished: its node's loss is not the task's doing (crash=False).
                self.requeue(job_key, task_key, n, now, f"its result could not be fetched within "
                             f"{self._result_timeout:g}s (batchnb.result-timeout): its node is gone", crash=False)

    def _record_gathered(self, token: int, results: list) -> None:
        finished = self._gathering.pop(token, None)
        if finished is None:
            return                # expired meanwhile: already requeued
        now = time.time()
        for (fut, entry), result in zip(finished, results):
            # Each Dask task's slot given back and its records recorded before the next's: a bundle
            # queued behind it on its node (queued.py) takes the slot only once its attempts ended.
            node = self.nodes.nodes.get(entry[1])
            if node is not None and node.queued == fut.key and result is not None:
                self.promote(node, now)       # it ran before this turn saw its slot free
            self.nodes.give_back(entry[1], fut.key, entry[3], now)
            if fut.key in self.queued_keys:     # never promoted: its node was lost meanwhile
                self.never_started(fut.key, entry[2])
            if result is None:    # its worker died between finishing and our gather: run it again
                self.release([fut])
                for job_key, task_key, n in entry[2]:
                    self.requeue(job_key, task_key, n, now, "the result was lost with its worker", crash=False)
                continue
            records = result if isinstance(result, list) else [result]
            carried_from = getattr(result, "carried_from", len(records))
            for i, record in enumerate(records):
                if i >= carried_from and not self.start_carried(record, now):
                    continue      # it may no longer start (its job ended): as if it had not run
                job, tr = self._lookup(record.job_id.lower(), record.task_id.lower())   # before it is let go
                try:
                    self.finished(record, now)
                except Exception as exc:  # noqa: BLE001 - this task fails; the others go on
                    log.exception("batchnb could not record the end of %s/%s", record.job_id, record.task_id)
                    self.fail_hard(record.job_id.lower(), record.task_id.lower(), record.attempt,
                                   f"batchnb could not record the attempt: {type(exc).__name__}: {exc}", now)
                if tr is not None:
                    self.paced(job, tr, max(0.0, record.end - record.start))

    def _gather_one(self, fut):
        try:
            return self.client.gather(fut, errors="raise")
        except Exception:  # noqa: BLE001 - lost: the caller requeues it
            return None

    @staticmethod
    def _error_text(fut) -> str:
        try:
            exc = fut.exception(timeout=1)
        except Exception as err:  # noqa: BLE001
            exc = err
        return f"{type(exc).__name__}: {exc}"
