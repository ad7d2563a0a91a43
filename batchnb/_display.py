"""How the user-facing objects find what draws them: by name, on first use.

The views (:mod:`batchnb.ui`, the top layer but the CLI) draw pools, jobs and
results, which sit in the layer below them; an object asks for its drawing
here by a name such as ``"job_bundle"``, as pools ask for backends by name.
So no module imports upward, ``import batchnb`` loads no widget library, and
:mod:`batchnb.ui` stays the only place that knows how anything looks.

>>> DRAWERS["job_result_html"]
'batchnb.ui.snapshot:job_result_html'
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

#: name -> "module:attribute" of the function (or class) in batchnb.ui that draws it.
DRAWERS: dict[str, str] = {
    "job_bundle": "batchnb.ui:job_bundle",
    "pool_bundle": "batchnb.ui:pool_bundle",
    "job_result_html": "batchnb.ui.snapshot:job_result_html",
    "JobView": "batchnb.ui.views:JobView",
    "PoolView": "batchnb.ui.views:PoolView",
    "CostView": "batchnb.ui.views:CostView",
    "TimelineView": "batchnb.ui.timeline:TimelineView",
    "waiting": "batchnb.ui.progress:waiting",
}


def drawer(name: str) -> Callable[..., Any]:
    """The drawing function (or view class) registered under ``name``."""
    module, _, attr = DRAWERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
