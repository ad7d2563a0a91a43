"""Local pools for tests, each with a ledger of its own in a temporary folder."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path


@contextlib.contextmanager
def temporary_pool(name: str, **options):
    """``bnb.Pool(name, **options)`` with its own ledger, closed (and its folder removed) after."""
    import batchnb as bnb
    from batchnb.engine.ledger import Ledger
    with tempfile.TemporaryDirectory() as tmp:
        pool = bnb.Pool(name, ledger=Ledger(Path(tmp) / "ledger.sqlite"), **options)
        try:
            yield pool
        finally:
            pool.close()
