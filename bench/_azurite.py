"""Azurite for benchmarks: the test suite's own launcher (``tests/azurite_fixture.py``).

Installed by the project's setup: ``npm install --prefix .ci/node azurite@3``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from azurite_fixture import SETUP_COMMAND, Azurite, AzuriteNotInstalled  # noqa: E402

__all__ = ["Azurite", "AzuriteNotInstalled", "SETUP_COMMAND"]
