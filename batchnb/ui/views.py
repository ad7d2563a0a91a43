"""The live views: anywidget widgets whose synced traits mirror a model of :mod:`batchnb.ui.model`.

Each view subscribes to its pool's event bus with ``batchnb.progress-interval``
(0.2 s: at most five redraws a second) and has no polling loop of its own;
the front end is ``widgets/*.js`` and ``widgets/theme.css``. Importing this
module loads anywidget and ipywidgets, so only :mod:`batchnb.ui` does it, on
first display.

In a kernel, ``job`` as a cell's last expression shows ``JobView(job)``; the
widget is an object like any other, and its synced traits are what the front
end draws:

>>> import batchnb as bnb
>>> with bnb.Pool("doc", dedicated=1) as pool:
...     job = pool.job("render")
...     frames = job.map(str.upper, ["a", "b", "c"])
...     result = job.wait(quiet=True)
...     view = JobView(job)
...     print(view.job_id, view.counts["succeeded"], view.total, view.done, view.eta, view.failures)
...     view.close()
render 3 3 3 None []
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import weakref
from pathlib import Path

import anywidget
import traitlets as t

from .. import _config
from ..engine.events import JobStateChanged, NodeStateChanged
from ..states import NODE_GROUPS
from .final import KeepsFinalState
from .model import CostModel, JobModel, PoolModel, node_hours

log = logging.getLogger("batchnb.ui")


def asset(name: str, package: Path | None = None) -> Path:
    """A front-end file: from the wheel (``batchnb/_static``) or, in an editable install, the repo's ``widgets/``."""
    here = package or Path(__file__).resolve().parent.parent
    for folder in (here / "_static", here.parent / "widgets"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"batchnb widget file {name!r} is in neither {here / '_static'} nor "
                            f"{here.parent / 'widgets'}; reinstall batchnb")


def _text(name: str) -> str:
    """A front-end file's text. Text, not its path: anywidget watches a path for changes
    with a signal that holds every widget made from it, so no view would ever be freed."""
    return asset(name).read_text(encoding="utf-8")


_SHARED = "_dom.js"
_IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./_dom\.js";?[ \t]*$', re.M)
_EXPORT = re.compile(r"^export\s+(?=(?:async\s+)?(?:function|const|let|class)\b)", re.M)
_EXPORTED = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|const|let|class)\s+([A-Za-z_$][\w$]*)", re.M)


@functools.cache
def _shared() -> tuple[str, frozenset[str]]:
    """``widgets/_dom.js`` as plain declarations (``export`` dropped, and its header comment,
    which speaks of the file) and the names it exports. Read once per process."""
    text = _text(_SHARED)
    names = frozenset(_EXPORTED.findall(text))
    body = _EXPORT.sub("", re.sub(r"\A(?://[^\n]*\n)+", "", text)).strip()
    if re.search(r"^\s*(?:export|import)\b", body, re.M):
        raise ValueError(f"widgets/{_SHARED}: only `export function`/`export const` declarations and no "
                         "imports, so that it can be inlined")
    return body, names


@functools.cache
def _module(name: str) -> str:
    """A widget's module text as anywidget gets it: one module, with ``./_dom.js`` inlined.

    anywidget loads ``_esm`` from a string, where ``import {...} from "./_dom.js"`` cannot
    resolve, and the front end has no bundler. So that import becomes the shared module's
    body in a function scope that hands back the imported names: its other names stay
    private, as in a module. The files on disk stay valid ES modules (tests run them in node).
    """
    text = _text(name)

    def inline(match: re.Match) -> str:
        body, exported = _shared()
        wanted = [n.strip() for n in match.group(1).split(",") if n.strip()]
        if not wanted or not set(wanted) <= exported:
            raise ValueError(f"widgets/{name} imports {wanted} from {_SHARED}, which exports only "
                             f"{sorted(exported)} (and no `x as y`)")
        names = ", ".join(wanted)
        return (f"// widgets/{_SHARED}, inlined by batchnb.ui.views\n"
                f"const {{ {names} }} = (() => {{\n{body}\nreturn {{ {names} }};\n}})();")

    text, found = _IMPORT.subn(inline, text)
    if found > 1 or re.search(r"^\s*import\b", text, re.M):
        raise ValueError(f"widgets/{name}: a widget imports only from {_SHARED}, in one "
                         f"`import {{ ... }} from \"./_dom.js\";`")
    return text


def _interval() -> float:
    return _config.seconds("progress-interval")


class _View(KeepsFinalState, anywidget.AnyWidget):
    _css = _text("theme.css")
    _sub = None

    def _listen(self, bus, **filters) -> None:
        """Subscribe to ``bus`` until the widget closes: by ``close()``, by its front end
        closing the comm, or by being garbage (the bus holds the view only weakly)."""
        if bus is None:
            self._sub = None
            return
        method = weakref.WeakMethod(self._on_events)
        holder: list = []

        def deliver(events: list) -> None:
            on_events = method()
            if on_events is None:     # the view was collected without close(): stop delivering
                holder[0].close()
            else:
                on_events(events)
        view = weakref.ref(self)

        def pool_closed() -> None:
            if view() is not None:
                view()._release()
        self._sub = bus.subscribe(deliver, interval=_interval(), on_close=pool_closed, **filters)
        holder.append(self._sub)
        if self.comm is not None:
            # The front end (or the kernel at shutdown) closing the widget's comm ends the view;
            # weakly, as the kernel's comm manager holds the comm.
            view = weakref.ref(self)
            self.comm.on_close(lambda _msg: view() is not None and view().close())

    def flush(self) -> None:
        """Deliver pending events now (the views' final state at the end of a job)."""
        if self._sub is not None:
            self._sub.flush()

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
        self._stop()
        super().close()

    def _stop(self) -> None:
        """What a view started besides its subscription (timers), ended on close."""

    def _release(self) -> None:
        """Its pool closed: keep showing the last state, but hold nothing of the pool (its
        jobs, ledger readers, timers), so that a closed pool can be collected."""
        self._keep_final()
        self._stop()
        for name in ("pool", "job"):
            if getattr(self, name, None) is not None:
                setattr(self, name, None)
        model = getattr(self, "model", None)
        for name in ("_tail", "_counts_reader"):
            if model is not None and hasattr(model, name):
                setattr(model, name, None)

    def _on_events(self, events: list) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        # The text/plain of the widget's output: what a front end without widgets shows.
        return f"<batchnb {type(self).__name__} of {self._what()}>"

    def _what(self) -> str:
        return "?"


class JobView(_View):
    """A job's live view: one bar split by state, counts, throughput, elapsed, ETA,
    retries and requeues, and its failed tasks with exit code, node and stderr tail.

    Made from a job (``JobView(job)``, what ``job`` as a cell's last expression
    shows), or from a model and an event bus, as here:

    >>> from batchnb.engine.events import EventBus, TasksAdded, TaskStateChanged
    >>> bus = EventBus()
    >>> view = JobView(model=JobModel("render", created=0.0), bus=bus)
    >>> bus.publish_many([TasksAdded("render", 2, 0.0, {"active": 2}),
    ...                   TaskStateChanged("render", "f1", "failed", "active", 1.0, 1, "spot-0", 3, "exit code 3")])
    >>> view.flush()         # events arrive at most every batchnb.progress-interval; this delivers them now
    >>> view.total, view.done, view.failures_total, view.failures[0]["exit_code"]
    (2, 1, 1, 3)
    >>> view
    <batchnb JobView of job 'render' (1 active, 1 failed)>
    >>> view.close()
    """

    _esm = _module("job.js")
    job_id = t.Unicode().tag(sync=True)
    counts = t.Dict().tag(sync=True)
    total = t.Int(0).tag(sync=True)
    done = t.Int(0).tag(sync=True)
    job_state = t.Unicode("active").tag(sync=True)
    tasks_complete = t.Bool(False).tag(sync=True)      # no task left to run: a fact beside job_state
    reason = t.Unicode("").tag(sync=True)
    elapsed = t.Float(0.0).tag(sync=True)
    throughput = t.Float(0.0).tag(sync=True)
    eta = t.Float(None, allow_none=True).tag(sync=True)
    retries = t.Int(0).tag(sync=True)
    requeues = t.Int(0).tag(sync=True)
    failures = t.List().tag(sync=True)
    failures_total = t.Int(0).tag(sync=True)
    problem = t.Unicode("").tag(sync=True)
    prep = t.List().tag(sync=True)           # a line per node: its prep and release runs' states

    def __init__(self, job=None, *, model: JobModel | None = None, bus=None, **kwargs):
        super().__init__(**kwargs)
        if model is None:
            model = JobModel.from_job(job)
            bus = job.pool.bus if job.pool is not None else None
        self.model = model
        self._sync()
        if model.job_state != "completed":
            self._listen(bus, job_id=model.job_id)

    def _what(self) -> str:
        done = ", ".join(f"{n} {s}" for s, n in self.model.counts.items() if n)
        return f"job {self.model.job_id!r} ({done or 'no tasks'})"

    def _on_events(self, events: list) -> None:
        self.model.apply(events)
        self._sync()
        if any(isinstance(e, JobStateChanged) and e.state == "completed" for e in events):
            self._sub.close()        # a completed job changes no more
            self._keep_final()

    def _sync(self) -> None:
        state = self.model.state(time.time())
        with self.hold_sync():
            for name, value in state.items():
                setattr(self, name, value)


class PoolView(_View):
    """A pool's nodes as a grid by state, dedicated and spot apart, each with its running
    tasks, CPU and memory; the autoscale target against the current size; scale controls.

    What ``pool`` as a cell's last expression shows:

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1, spot=1) as pool:
    ...     view = PoolView(pool)
    ...     print([(n["id"], n["group"], n["state"], n["slots"]) for n in view.nodes])
    ...     print(view.targets, view.current)
    ...     view.close()
    [('dedicated-0', 'dedicated', 'idle', 1), ('spot-0', 'spot', 'idle', 1)]
    {'dedicated': 1, 'spot': 1} {'dedicated': 1, 'spot': 1}
    """

    _esm = _module("pool.js")
    pool_name = t.Unicode().tag(sync=True)
    nodes = t.List().tag(sync=True)
    targets = t.Dict().tag(sync=True)
    current = t.Dict().tag(sync=True)
    autoscale = t.Unicode("").tag(sync=True)
    target_reason = t.Unicode("").tag(sync=True)
    dashboard = t.Unicode("").tag(sync=True)         # the Dask dashboard's URL, or ""
    alerts = t.List().tag(sync=True)                  # the pool's alerts now firing (pool.alert)
    error = t.Unicode("").tag(sync=True)
    metrics_every = 2.0      # seconds between readings of pool.nodes() (CPU, memory, removed nodes)

    def __init__(self, pool=None, *, model: PoolModel | None = None, bus=None, **kwargs):
        super().__init__(**kwargs)
        self.pool = pool
        self._lock = threading.RLock()     # the bus's thread, the late reading's timer and resize() share the model
        self._late: threading.Timer | None = None
        self.model = model if model is not None else PoolModel.from_pool(pool)
        self._read_at = time.monotonic()
        self._sync()
        self._listen(bus if bus is not None else getattr(pool, "bus", None))
        self.on_msg(self._on_msg)

    def _what(self) -> str:
        return f"pool {self.model.name!r} ({len(self.model.nodes)} nodes)"

    def _on_events(self, events: list) -> None:
        with self._lock:
            self.model.apply(events)
            self._read_nodes()
            self._sync()

    def _read_nodes(self) -> None:
        """Read ``pool.nodes()`` if the last reading is ``metrics_every`` old, else once when it is.

        CPU, memory and removed nodes are not events; a reading is a dispatcher round trip,
        so it is taken along with events at most every ``metrics_every`` seconds, and one
        late reading follows the last events (the view ends on the pool's state, not on
        a stale one, when events stop).
        """
        if self.pool is None or self.pool._closed or (self._sub is not None and self._sub.closed):
            return
        wait = self._read_at + self.metrics_every - time.monotonic()
        if wait > 0:
            if self._late is None:
                self._late = threading.Timer(wait, self._late_read)
                self._late.daemon = True
                self._late.name = "batchnb-pool-view"
                self._late.start()
            return
        self._read_at = time.monotonic()
        try:
            self.model.update_nodes(self.pool.nodes())
        except Exception as exc:  # the pool may be closing
            log.debug("pool view: cannot read nodes: %s", exc)

    def _late_read(self) -> None:
        with self._lock:
            self._late = None
            self._read_nodes()
            self._sync()

    def _stop(self) -> None:
        with self._lock:
            if self._late is not None:
                self._late.cancel()
                self._late = None

    def _sync(self) -> None:
        state = self.model.state()
        with self.hold_sync():
            self.pool_name = state["pool"]
            for name in ("nodes", "targets", "current", "autoscale", "target_reason", "dashboard", "alerts"):
                setattr(self, name, state[name])

    def _on_msg(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict) or content.get("type") != "resize":
            return
        group, count = content.get("group"), content.get("count")
        if group not in NODE_GROUPS:
            self.error = f"resize: no node group {group!r}"
            return
        # Off the kernel's thread: a resize may wait for nodes, and the kernel must stay free.
        threading.Thread(target=self.resize, args=(group, count), daemon=True, name="batchnb-resize").start()

    def resize(self, group: str, count) -> None:
        """What the scale controls call: ``pool.resize`` of one group; errors show in the view."""
        try:
            self.pool.resize(**{group: count})
            with self._lock:
                self.error = ""
                self.model.targets[group] = count
                self._sync()
        except Exception as exc:  # shown to the user in the view, not lost in a thread
            self.error = f"resize {group} to {count}: {exc}"


class CostView(_View):
    """Spend so far and rate per hour, per node group, and the budget; node-hours when the
    pool has no cost meter.

    ``CostView(pool)``, or ``CostView(pool, job=job)`` for a job and its budget
    (``pool.view("cost", job=job)``); here from a model and an event bus:

    >>> from batchnb.engine.events import CostSample, EventBus
    >>> from batchnb.ui.model import CostModel
    >>> bus = EventBus()
    >>> view = CostView(model=CostModel("job sweep", job_id="sweep", budget=5.0), bus=bus)
    >>> view.metered, view.total, view.budget
    (False, None, 5.0)
    >>> bus.publish(CostSample("p", 10.0, total=1.25, rate_per_hour=0.75, job_id="sweep"))
    >>> view.flush()
    >>> view.metered, view.total, view.rate, view.currency
    (True, 1.25, 0.75, 'USD')
    >>> view.close()
    """

    _esm = _module("cost.js")
    scope = t.Unicode().tag(sync=True)
    metered = t.Bool(False).tag(sync=True)
    currency = t.Unicode("USD").tag(sync=True)
    total = t.Float(None, allow_none=True).tag(sync=True)
    rate = t.Float(None, allow_none=True).tag(sync=True)
    budget = t.Float(None, allow_none=True).tag(sync=True)
    groups = t.Dict().tag(sync=True)
    as_of = t.Float(0.0).tag(sync=True)
    final = t.Bool(False).tag(sync=True)
    read_every = 2.0         # seconds between full readings; cost samples move the total between them

    def __init__(self, pool=None, job=None, *, model: CostModel | None = None, bus=None, **kwargs):
        super().__init__(**kwargs)
        self.pool, self.job = pool, job
        if model is None:
            budget = getattr(job._run.spec, "budget", None) if job is not None else None
            model = CostModel(f"job {job.id}" if job is not None else f"pool {pool.name}",
                              job_id=job.id if job is not None else None, budget=budget)
        self.model = model
        self._read_at = 0.0
        self._since: float | None = None
        self._read()
        self._sync()
        self._listen(bus if bus is not None else getattr(pool, "bus", None))

    def _read(self) -> None:
        if self.pool is None:
            return
        self._read_at = time.monotonic()
        try:
            self._since = _started(self.pool) if self._since is None else self._since
            hours = node_hours(self.pool.ledger.node_history(self.pool.name), time.time(), self._since)
            self.model.update(cost=self._cost() if hasattr(self.pool, "cost") else None, hours=hours)
        except Exception as exc:  # the pool may be closing
            log.debug("cost view: cannot read cost: %s", exc)

    def _what(self) -> str:
        return self.model.scope

    def _cost(self):
        if self.job is None:
            return self.pool.cost()
        meter = next((e for e in getattr(self.pool, "_extensions", ()) if hasattr(e, "job_cost")), None)
        # Without the per-task detail a job of 100k tasks costs no more to read than one of ten.
        return meter.job_cost(self.job.id, detail=False) if meter is not None else self.job.cost()

    def _on_events(self, events: list) -> None:
        self.model.apply(events)
        if time.monotonic() - self._read_at >= self.read_every or any(isinstance(e, NodeStateChanged)
                                                                       for e in events):
            self._read()
        self._sync()

    def _sync(self) -> None:
        with self.hold_sync():
            for name, value in self.model.state().items():
                setattr(self, name, value)


def _started(pool) -> float:
    """When the pool's scheduler started: node-hours before it belong to earlier pools of this name."""
    try:
        return float(pool.client.scheduler_info(n_workers=0).get("started") or 0.0)
    except Exception:  # an old scheduler without the field: count the whole history
        return 0.0
