"""notebooks/papermill.ipynb: a papermill run cut short, then executed again, finishes
the job without running any task that had already succeeded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from batchnb.engine.ledger import Ledger

from .test_resume import by_state, driver_env, lines, wait_ledger

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "papermill.ipynb"
N_TASKS = 24


def papermill(home: Path, tmp: Path, out: str, ran: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp / out), "--cwd", str(tmp),
            "-p", "job_id", "nightly", "-p", "n_tasks", str(N_TASKS), "-p", "task_seconds", "0.25",
            "-p", "out_file", str(ran), "--no-progress-bar", "-k", "python3"]
    return subprocess.Popen(args, env=driver_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL papermill, its kernel (a session of its own) and everything they started."""
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(10)
    psutil.wait_procs(family, timeout=10)
    proc.stdout.close()


def test_papermill_run_cut_short_then_executed_again(home, tmp_path):
    ran = tmp_path / "parts.txt"
    led = Ledger(home / "ledger.sqlite")
    first = papermill(home, tmp_path, "run1.ipynb", ran)
    try:
        wait_ledger(led, "nightly", lambda c: c.get("succeeded", 0) >= 4 and c.get("running", 0) >= 1, first,
                    timeout=60)
    finally:
        kill_tree(first)
    succeeded, running, ran_then = by_state(led, "nightly", "succeeded"), by_state(led, "nightly", "running"), lines(ran)
    assert succeeded and running and len(succeeded) < N_TASKS + 1

    second = papermill(home, tmp_path, "run2.ipynb", ran)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out

    counts = led.task_counts("nightly")
    assert counts == {"succeeded": N_TASKS + 1}, counts
    final = lines(ran)
    assert set(final) == {f"part-{i}" for i in range(N_TASKS)}
    for tid in succeeded - {"count"}:
        assert final[tid] == ran_then[tid] == 1, tid          # never again after its success
    for tid in running:
        states = [a["state"] for a in led.attempts("nightly", tid)]
        assert states[0] == "interrupted" and states[-1] == "succeeded", (tid, states)

    # The second run's notebook shows the finished job and what was run again.
    nb = json.loads((tmp_path / "run2.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {}))
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert f"distinct parts counted: {N_TASKS} of {N_TASKS}" in text
    assert f"{len(running)} task(s) were running when an earlier run stopped" in text
    resumes = len(led.audit_trail("nightly", action="resume"))
    assert resumes == 1
