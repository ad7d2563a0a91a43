"""Cost governance: prices, a meter of node time, attribution, budgets, forecasts.

Pure: no Dask, no clock of its own. ``meter`` is the meter, budgets and
forecasts; ``value`` the :class:`Cost` a meter reports; ``prices`` the VM
price table; ``replay`` rebuilds a meter from the ledger after the fact.
"""

from .meter import *  # noqa: F401,F403
from .meter import __all__ as _meter_names
from .replay import cost_from_ledger

__all__ = [*_meter_names, "cost_from_ledger"]
