"""Jupyter's interrupt button: SIGINT to the kernel's whole process group, mid-job.

The driver is a real script in a process group of its own (as Jupyter starts
a kernel); the test signals the group as Jupyter does. The interrupt must stop
``job.wait()`` and nothing else: the local nodes live in sessions of their own,
so the job goes on and a second ``job.wait()`` sees it complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent("""
    import sys
    import batchnb as bnb
    from batchnb.engine.ledger import Ledger

    if __name__ == "__main__":
        ledger, started, waiting = sys.argv[1], sys.argv[2], sys.argv[3]
        with bnb.Pool("interrupted", dedicated=2, ledger=Ledger(ledger)) as pool:
            job = pool.job("goes-on")
            job.add_task("first", f"touch {started}; sleep 2")
            for i in range(4):
                job.add_task(f"t{i}", "sleep 0.5")
            open(waiting, "w").close()      # the interrupt is meant for wait, not for add_task
            try:
                job.wait(timeout=60, quiet=True)
                print("not interrupted", flush=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            result = job.wait(timeout=60, quiet=True)
            print("counts", sorted(result.counts.items()), flush=True)
""")


def test_sigint_to_the_drivers_group_stops_only_wait(tmp_path):
    script, started, waiting = tmp_path / "driver.py", tmp_path / "started", tmp_path / "waiting"
    script.write_text(DRIVER)
    env = {**os.environ, "BATCHNB_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "l.sqlite"), str(started), str(waiting)],
                            env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: (started.exists() and waiting.exists()) or proc.poll() is not None, 60,
                 "the first task to run and the driver to wait")
        assert proc.poll() is None, proc.stdout.read()
        os.killpg(proc.pid, signal.SIGINT)      # what Jupyter's interrupt button does
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert "interrupted" in out.splitlines(), out
    assert "counts [('succeeded', 5)]" in out.splitlines(), out
    assert proc.returncode == 0, out
