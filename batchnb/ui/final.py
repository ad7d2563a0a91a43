"""The views' final state, kept in a saved notebook.

A widget draws nothing where no kernel runs (papermill + nbconvert, a code
host), and a ``text/html`` alternative inside the widget's own bundle is
both ignored by nbconvert (it prefers the widget view) and frozen at the
first display. So a view shown in a kernel also makes a display of its own
(empty while the view is live) and fills it with a static table of its final
state when its job completes or its pool closes: that output is saved with
the notebook and read by nbconvert.
"""

from __future__ import annotations

import logging

from .model import CostModel, JobModel, PoolModel
from .progress import in_kernel
from .snapshot import cost_view_html, job_view_html, pool_html

log = logging.getLogger("batchnb.ui")


def static_html(model) -> str:
    """The static HTML of a view model's state now."""
    if isinstance(model, JobModel):
        return job_view_html(model.state())
    if isinstance(model, PoolModel):
        state = model.state()
        # A closed pool has no node left: its snapshot lists the nodes it had, as they ended.
        state["nodes"] += [dict(n, running=[]) for k, n in sorted(model.gone.items()) if k not in model.nodes]
        return pool_html(state)
    if isinstance(model, CostModel):
        return cost_view_html(model.state())
    return ""


class KeepsFinalState:
    """Mixed into the views: a display that holds the final state once the view stops changing."""

    _final_handle = None

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if self._final_handle is None and in_kernel():
            try:
                from IPython.display import HTML, display
                self._final_handle = display(HTML(""), display_id=True)
            except Exception as exc:  # a view shows even where no display can be made
                log.debug("no display for the final state: %s", exc)
        return bundle

    def _keep_final(self) -> None:
        """The view ends (its job completed, its pool closed): fill its display with its state."""
        model = getattr(self, "model", None)
        if isinstance(model, CostModel) and getattr(self, "pool", None) is not None and not model.final:
            self._read()            # the pool closed: the ledger's final figures, no rate any more
            model.close()
            self._sync()
        if self._final_handle is not None and model is not None:
            try:
                from IPython.display import HTML
                self._final_handle.update(HTML(static_html(model)))
            except Exception as exc:  # a kernel shutting down: the live view still shows
                log.debug("cannot keep the final state: %s", exc)
