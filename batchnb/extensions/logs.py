"""Logs that last: each attempt's stdout/stderr uploaded to the pool's ``logs_url`` as it ends.

``bnb.Pool(..., logs_url="file:///path/{pool}/" or "az://logs/{pool}/")``: as an
attempt ends (succeeded, failed, timed out or terminated), the node that ran
it puts its ``stdout.txt`` and ``stderr.txt`` under
``<logs_url>/<job>/<task>/<attempt>/`` (:mod:`batchnb.node.logupload`,
through batchnb.staging's retries). Where they went is a ledger event of
the task (kind ``logs``: attempt and URLs), which ``t.stdout()`` and
``t.stderr()`` read when the node's folder is gone. Uploads run on a thread
of their own, so a slow store never holds the dispatcher up; one that fails
is logged (the attempt's outcome does not change).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import time

from ..engine.extension import PoolExtension
from ..engine.logjson import apply_log_format
from ..errors import SpecError
from ..node.logupload import attempt_logs_url, upload_logs

log = logging.getLogger("batchnb.logs")


def check_logs_url(value) -> str | None:
    """None, or an fsspec URL (``{pool}`` stands for the pool's name); a SpecError otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or "://" not in value:
        raise SpecError("logs_url", value, "expected an fsspec URL such as 'file:///logs/{pool}/' or "
                        "'az://logs/{pool}/'")
    try:
        value.format(pool="p")
    except (KeyError, IndexError, ValueError):
        raise SpecError("logs_url", value, "the only placeholder it may hold is {pool}") from None
    return value


class LogsExtension(PoolExtension):
    """Has each ended attempt's node upload its stdout/stderr to the pool's ``logs_url``."""

    def __init__(self, engine):
        super().__init__(engine)
        self.url = getattr(engine, "logs_url", None)
        self._uploads = cf.ThreadPoolExecutor(1, thread_name_prefix=f"batchnb-logs-{engine.name}")
        apply_log_format()       # batchnb.log-format: json, in whichever process runs the engine

    def stop(self) -> None:
        self._uploads.shutdown(wait=True, cancel_futures=False)

    def task_ended(self, job, tr, now: float) -> None:
        if self.url is None or tr.node is None:
            return
        node = self.engine.dispatcher.nodes.nodes.get(tr.node)
        if node is None or node.address is None:
            return
        job_id, task_id, n, address = job.spec.id, tr.spec.id, tr.n, node.address
        # After this turn's commit: the attempt's task_dir is on record by then.
        self.engine.dispatcher.at(now, lambda: self._uploads.submit(self._upload, job_id, task_id, n, address))

    def _upload(self, job_id: str, task_id: str, n: int, address: str) -> None:
        try:
            row = next((a for a in self.engine.ledger.attempts(job_id, task_id) if a["n"] == n), None)
            if row is None or not row["task_dir"]:
                return     # nothing was kept on the node (an empty succeeded attempt's folder is not)
            dest = attempt_logs_url(self.url, self.engine.name, job_id, task_id, n)
            done = self.engine.client.run(upload_logs, row["task_dir"], dest, self.engine.storage_options,
                                          workers=[address])
            urls = done.get(address) or []
        except Exception as exc:  # noqa: BLE001 - the node may be gone; the attempt's outcome stands
            log.warning("the logs of %s/%s attempt %d were not kept at %s: %s", job_id, task_id, n, self.url, exc)
            return
        if urls:
            self.engine.dispatcher.post(lambda: self.engine.dispatcher.batch.event(
                time.time(), "logs", job_id, task_id, data={"attempt": n, "urls": urls}))


def kept_log(ledger, job_id: str, task_id: str, attempt: int, name: str, storage_options=None) -> str | None:
    """The copy of attempt ``attempt``'s ``name`` (stdout.txt | stderr.txt) kept under a ``logs_url``,
    or None when none was kept (or it cannot be read)."""
    from ..node.logupload import read_log
    for event in reversed(ledger.job_events(job_id, ("logs",))):
        if (event["task_id"] or "").lower() != task_id.lower():
            continue
        data = json.loads(event["data"] or "{}")
        if data.get("attempt") != attempt:
            continue
        url = next((u for u in data.get("urls", ()) if u.endswith("/" + name)), None)
        return read_log(url, storage_options) if url else None
    return None
