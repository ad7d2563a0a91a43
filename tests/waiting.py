"""A bounded wait for a condition, shared by the tests (no sleeps to wait for state).

The same one the shipped backend conformance suite uses.
"""

from __future__ import annotations

from batchnb.backends.testing import wait_for

__all__ = ["wait_for"]
