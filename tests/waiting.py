"""A bounded wait for a condition, shared by the tests (no sleeps to wait for state)."""

from __future__ import annotations

import time


def wait_for(cond, timeout: float, what: str):
    """Return ``cond()``'s first true value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
