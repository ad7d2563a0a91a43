"""``import batchnb`` stays light: the heavy parts load when a pool needs them.

A new local pool's first task waits on everything imported before it, so
``import batchnb`` loads neither Dask (half of what it used to cost) nor what
Dask pulls in; batchnb's defaults still reach ``dask.config`` the moment
anything imports it. Checked in a fresh interpreter; nothing is timed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("dask", "distributed", "yaml", "numpy", "psutil", "jinja2", "fsspec", "tornado", "ipywidgets", "anywidget")


def test_import_batchnb_loads_nothing_heavy_and_dask_config_still_gets_its_defaults():
    code = f"""
import sys
import batchnb
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
import dask.config
print(dask.config.get("batchnb.lease-ttl"))
with dask.config.set({{"batchnb.lease-ttl": "5s"}}):
    print(batchnb._config.seconds("lease-ttl"))
print(dask.config.get("batchnb.lease-ttl"), dask.config.get("batchnb.node-poll"))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["", "30s", "5.0", "30s 0.5s"], out.stdout


def test_importing_the_pool_module_does_not_load_dask():
    # A local pool starts its node launcher before anything imports Dask (Backend.warm_up); a
    # module of the pool's that touched dask.config on import would put Dask back ahead of it.
    # Nor fsspec (staging's): about 50 ms here, that the launcher would wait for as well.
    code = ("import sys, batchnb.pool; "
            "print('dask' in sys.modules, 'distributed' in sys.modules, 'fsspec' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"], out.stdout
