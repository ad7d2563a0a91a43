"""Cost governance: prices, a meter of node time, attribution, budgets, forecasts (pure)."""

from .meter import *  # noqa: F401,F403
from .meter import __all__  # noqa: F401
