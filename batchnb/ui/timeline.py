"""``job.timeline()``: a job's attempts on a lane per node, its failures, and "rerun failed".

The timeline draws one bar per attempt coloured by its outcome (succeeded,
failed, requeued, preempted, running, ...), so idle gaps, a bad node's lane
and clusters of failures show at a glance. A dense job comes from the ledger
already counted per lane and time bin (:meth:`~batchnb.engine.ledger.Ledger.timeline`):
a view of 100,000 attempts costs what one of a few hundred does. Zooming in
(wheel, drag, the buttons) asks for the visible window again, which turns
bins back into bars; a click on a bar opens its task (state, exit code,
stdout/stderr tails), a click on a bin zooms to it. Under the lanes, the
failures grouped by exit code and category, and a "rerun failed" button
(Azure's reactivate, :meth:`Job.reactivate_failed`).

>>> import batchnb as bnb
>>> with bnb.Pool("doc", dedicated=1) as pool:
...     job = pool.job("tl")
...     ok, bad = job.add_task("ok", "true"), job.add_task("bad", "echo no >&2; exit 2")
...     result = job.wait(quiet=True)
...     view = TimelineView(job)
...     print(len(view.data["bars"]), [g["count"] for g in view.failures])
...     view._on_msg(view, {"type": "open", "task": "bad"}, [])
...     print(view.selected["state"], view.selected["exit_code"], view.selected["stderr"].strip())
...     view.close()
2 [1]
failed 2 no
"""

from __future__ import annotations

import threading
import time

import traitlets as t

from ..engine.events import JobStateChanged
from .views import _module, _text, _View

#: Outcomes the ledger names that the theme does not colour as task states.
_CSS = """
.bnb-tl-lanes { position: relative; user-select: none; cursor: grab; margin: 4px 0; }
.bnb-tl-lane { display: flex; align-items: center; height: 18px; border-bottom: 1px solid var(--jp-border-color2, #eee); }
.bnb-tl-name { width: 120px; flex: none; font-size: 11px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bnb-tl-name.bnb-tl-bad { color: var(--bnb-failed); font-weight: bold; }
.bnb-tl-track { position: relative; flex: 1; height: 14px; background: var(--jp-layout-color2, #f5f5f5); }
.bnb-tl-bar { position: absolute; top: 1px; height: 12px; min-width: 2px; cursor: pointer; }
.bnb-tl-bin { position: absolute; top: 0; height: 14px; display: flex; flex-direction: column; cursor: zoom-in; }
.bnb-s-requeued { background: var(--bnb-active); }
.bnb-s-interrupted { background: var(--bnb-blocked); }
.bnb-s-terminated { background: var(--bnb-cancelled); }
.bnb-tl-task { border: 1px solid var(--jp-border-color1, #ccc); padding: 4px; margin-top: 4px; }
.bnb-tl-task pre { max-height: 12em; overflow: auto; margin: 2px 0; }
"""


class TimelineView(_View):
    """A job's attempts on a lane per node, zoomable, with its failures and a "rerun failed" button.

    ``data`` is the ledger's timeline of the window shown (bars, or bins when
    dense), ``failures`` the failed tasks grouped by exit code and category,
    ``selected`` the task a click opened. See the module's docstring.
    """

    _esm = _module("timeline.js")
    _css = _text("theme.css") + _CSS
    job_id = t.Unicode().tag(sync=True)
    job_state = t.Unicode("active").tag(sync=True)
    data = t.Dict().tag(sync=True)
    window = t.List(allow_none=True, default_value=None).tag(sync=True)
    failures = t.List().tag(sync=True)
    selected = t.Dict().tag(sync=True)
    note = t.Unicode("").tag(sync=True)

    #: At most one read of the ledger per this many seconds while events arrive.
    refresh_every = 1.0

    def __init__(self, job, **kwargs):
        super().__init__(**kwargs)
        self.job = job
        self._ledger = job.ledger
        self._lock = threading.Lock()
        self._read_at = 0.0
        self.job_id = job.id
        self._refresh()
        self.on_msg(self._on_msg)
        # A completed job may be reactivated: the view keeps listening until it is closed.
        self._listen(job.pool.bus if job.pool is not None else None, job_id=job.id)

    def _what(self) -> str:
        return f"job {self.job_id!r} ({self.data.get('count', 0)} attempts)"

    def _refresh(self) -> None:
        # Read and shown under one lock: the event thread's refresh and the kernel's (a new
        # window) may overlap, and one that read the old window must not be shown after the
        # other's (a browser test saw a zoomed window's 6 bars stay once zoomed out).
        with self._lock:
            self._read_at = time.monotonic()
            win = self.window or [None, None]
            data = self._ledger.timeline(self.job_id, since=win[0], until=win[1])
            failures = self._ledger.failure_groups(self.job_id)
            row = self._ledger.job(self.job_id)
            # The task a click opened is shown as it is now (a rerun changes it), not as it was.
            selected = self.task_details(self.selected["id"]) if self.selected.get("id") else {}
            with self.hold_sync():
                self.data, self.failures, self.selected = data, failures, selected
                self.job_state = row["state"] if row else "?"

    def _on_events(self, events: list) -> None:
        ended = any(isinstance(e, JobStateChanged) for e in events)
        if ended or time.monotonic() - self._read_at >= self.refresh_every:
            self._refresh()

    def _on_msg(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "window":
            win = content.get("window")
            self.window = [float(win[0]), float(win[1])] if win else None
            self._refresh()
        elif kind == "open":
            with self._lock:        # not to be undone by a refresh that read the task opened before
                self.selected = self.task_details(str(content.get("task", "")))
        elif kind == "rerun":
            # Off the kernel's thread: the dispatcher's answer must not hold up the comm.
            threading.Thread(target=self.rerun_failed, daemon=True, name="batchnb-rerun").start()

    def task_details(self, task_id: str) -> dict:
        """What a click on a bar shows: id, state, exit code, attempts, node, why, output tails."""
        from ..task import Task
        if self.job is None or self._ledger.task(self.job_id, task_id) is None:
            return {"id": task_id, "state": "?", "message": f"no task {task_id!r} in job {self.job_id!r}"}
        task = Task(self.job, task_id)
        info = task.info()
        return {"id": info.id, "state": info.state, "exit_code": info.exit_code, "attempts": info.attempts,
                "node": info.node, "message": info.failure, "category": info.category,
                "stdout": task.tail(20), "stderr": task.tail(20, "stderr")}

    def rerun_failed(self) -> None:
        """What the "rerun failed" button calls: ``job.reactivate_failed()``; the outcome shows in ``note``."""
        try:
            ids = self.job.reactivate_failed() if self.job is not None else []
            self.note = f"reactivated {len(ids)} failed task{'' if len(ids) == 1 else 's'}"
        except Exception as exc:  # noqa: BLE001 - shown in the view, where the button was pressed
            self.note = f"rerun failed: {exc}"
        self._refresh()
