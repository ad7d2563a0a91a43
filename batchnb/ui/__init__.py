"""Views of jobs, pools and cost.

``JobView``, ``PoolView`` and ``CostView`` are anywidget widgets (in
:mod:`batchnb.ui.views`), loaded on first use only, so ``import batchnb`` never
loads the widget stack. In a Jupyter kernel with anywidget installed, a job
or pool that is a cell's value shows its live view; anywhere else (a
terminal, a plain Python ``repr``) it shows static HTML.

>>> import batchnb as bnb
>>> from batchnb.ui import JobView, PoolView, CostView, widgets_available
>>> widgets_available()             # not in a Jupyter kernel here: static HTML, not widgets
False
>>> with bnb.Pool("doc", dedicated=0) as pool:
...     job = pool.job("shown")
...     print(sorted(job._repr_mimebundle_()), sorted(pool._repr_mimebundle_()))
['text/html', 'text/plain'] ['text/html', 'text/plain']

In a kernel, ``JobView(job)``, ``PoolView(pool)`` and ``CostView(pool, job=job)``
are the live views that ``job``, ``pool`` and ``pool.view("cost", job)`` show.
"""

from __future__ import annotations

import importlib.util
import weakref

from .progress import in_kernel

__all__ = ["CostView", "JobView", "PoolView", "TimelineView", "widgets_available"]


def __getattr__(name: str):
    if name in ("JobView", "PoolView", "CostView"):
        from . import views
        return getattr(views, name)
    if name == "TimelineView":
        from .timeline import TimelineView
        return TimelineView
    raise AttributeError(f"module 'batchnb.ui' has no attribute {name!r}")


def widgets_available() -> bool:
    """True in a Jupyter kernel that has anywidget (``pip install batchnb[notebook]``)."""
    return in_kernel() and importlib.util.find_spec("anywidget") is not None


def _widget_bundle(widget) -> dict:
    out = widget._repr_mimebundle_()
    return out[0] if isinstance(out, tuple) else out


def job_bundle(job) -> dict:
    """What a job shows as a cell's value: its live view, or static HTML of its state now.

    A completed job, or one whose tasks all ended, shows its final state as
    static HTML even in a kernel (a live view of it would only tick a clock):
    that HTML is also what nbconvert and code hosts render.
    """
    result = job.result()
    if widgets_available() and job.pool is not None and result.state != "completed" \
            and not result.all_tasks_complete:
        from .views import JobView
        return _widget_bundle(JobView(job))
    from .snapshot import job_result_html
    return {"text/plain": repr(job), "text/html": job_result_html(result)}


def pool_bundle(pool) -> dict:
    """What a pool shows as a cell's value: its live PoolView, or a static table of its nodes."""
    if pool._closed:
        return {"text/plain": repr(pool)}
    if widgets_available():
        return _widget_bundle(live_pool_view(pool))
    from .model import PoolModel
    from .snapshot import pool_html
    return {"text/plain": repr(pool), "text/html": pool_html(PoolModel.from_pool(pool).state())}


_pool_views: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # pool -> weakref to its open PoolView


def live_pool_view(pool):
    """The pool's open PoolView, made on first use: a pool shown again in another cell
    shows the same widget (one subscription, one reading of its nodes), not one more."""
    ref = _pool_views.get(pool)
    view = ref() if ref is not None else None
    if view is None or view.comm is None:          # never made, collected, or closed
        from .views import PoolView
        view = PoolView(pool)
        _pool_views[pool] = weakref.ref(view)
    return view
