"""A job outlives the process that drives it: SIGKILL the driver, resume elsewhere.

The driver is a real script in a subprocess (what a notebook kernel or a
papermill run is). Each task appends its id to one file, so the file says
how often each task really ran. The ledger says which tasks had succeeded
when the driver died; none of those may run again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import dask
import pytest

import batchnb as bnb
from batchnb.engine.ledger import Ledger

N_TASKS = 30

DRIVER = textwrap.dedent("""
    import sys
    import batchnb as bnb

    def main():
        job_id, out = sys.argv[1], sys.argv[2]
        with bnb.Pool("local", dedicated=2) as pool:
            # The same code on every run: a re-run finds the job in the ledger and
            # resumes it; adding tasks that exist with equal specs adds nothing.
            job = pool.job(job_id)
            job.add_tasks([bnb.TaskSpec(f"t{i:02d}", f"sleep 0.25; echo t{i:02d} >> {out}")
                           for i in range({n})])
            print("dispatching", flush=True)
            print(job.wait(quiet=True), flush=True)

    if __name__ == "__main__":
        main()
""").replace("{n}", str(N_TASKS))


REPO = Path(__file__).resolve().parents[2]


def driver_env(home, **env) -> dict:
    """The environment of a driver subprocess: this checkout's package and the test's home."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "BATCHNB_HOME": str(home), "PYTHONPATH": path, **env}


def start_driver(script, job_id, out, home, **env):
    full = driver_env(home, **env)
    return subprocess.Popen([sys.executable, str(script), job_id, str(out)], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ledger(led: Ledger, job_id: str, cond, proc=None, timeout: float = 30.0) -> dict:
    """Poll the ledger (bounded) until ``cond(counts)``; fail early if the driver exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = led.task_counts(job_id) if led.job(job_id) else {}
        if cond(counts):
            return counts
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver exited ({proc.returncode}) before the kill: {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail(f"ledger state not reached in {timeout}s: {counts}")


def kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)     # reaped: its pid is gone, so its lease is known dead
    proc.stdout.close()


def by_state(led: Ledger, job_id: str, state: str) -> set[str]:
    return {r["id"] for r in led.tasks(job_id, ("id",), states=(state,))}


def lines(out) -> Counter:
    return Counter(out.read_text().split()) if out.exists() else Counter()


def test_sigkilled_driver_resumes_in_new_processes(home, tmp_path):
    job_id, out = "resume-e2e", tmp_path / "ran.txt"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    led = Ledger(home / "ledger.sqlite")
    # A long lease: only the dead holder's pid being gone lets the resumers in at once.
    env = {"DASK_BATCHNB__LEASE_TTL": "300s"}

    snapshots = []
    for round_ in range(2):       # 1st: a fresh job; 2nd: the same script re-run, killed again
        t0 = time.monotonic()
        proc = start_driver(script, job_id, out, home, **env)
        done_before = len(snapshots[-1][0]) if snapshots else 0
        wait_ledger(led, job_id, lambda c: c.get("succeeded", 0) >= done_before + 4 and c.get("running", 0) >= 1,
                    proc)
        if round_ == 1:
            # The dead driver's lease (300 s) did not hold the re-run back.
            assert time.monotonic() - t0 < 60
        kill(proc)
        snapshots.append((by_state(led, job_id, "succeeded"), by_state(led, job_id, "running"), lines(out)))
    (s1, r1, ran1), (s2, r2, ran2) = snapshots
    assert s1 and r1 and s2 > s1 and r2, snapshots
    assert len(s2) < N_TASKS

    with dask.config.set({"batchnb.lease-ttl": "300s"}):
        with bnb.Pool("local", dedicated=2) as pool:
            job = bnb.Job.attach(job_id, pool=pool)
            result = job.wait(timeout=60, quiet=True)
            # The same id again in this process is the live job, not a second copy.
            assert pool.job(job_id)._run is job._run
    assert result.counts == {"succeeded": N_TASKS}, result

    ran = lines(out)
    assert set(ran) == {f"t{i:02d}" for i in range(N_TASKS)}
    for succeeded, ran_then in ((s1, ran1), (s2, ran2)):
        for tid in succeeded:    # succeeded before a kill: never ran again after it
            assert ran[tid] == ran_then[tid], (tid, ran_then[tid], ran[tid])
    for tid in s2:
        assert ran[tid] == (1 if tid not in r1 else ran2[tid]), tid
        attempts = led.attempts(job_id, tid)
        assert [a["state"] for a in attempts][-1] == "succeeded"
        if tid in s1:
            assert [a["state"] for a in attempts] == ["succeeded"], attempts
    for tid in r1 | r2:          # running at a kill: run again, the interruption on record
        attempts = led.attempts(job_id, tid)
        states = [a["state"] for a in attempts]
        assert "interrupted" in states and states[-1] == "succeeded", (tid, states)
        gone = next(a for a in attempts if a["state"] == "interrupted")
        assert "driving process stopped" in gone["message"]
        assert led.task(job_id, tid)["requeues"] >= 1
        assert 1 <= ran[tid] <= 3
    # Each resume is in the audit trail.
    resumes = len(led.audit_trail(job_id, action="resume"))
    assert resumes == 2


LONG_DRIVER = textwrap.dedent("""
    import sys
    import batchnb as bnb

    if __name__ == "__main__":
        with bnb.Pool("local", dedicated=1) as pool:
            job = pool.job(sys.argv[1])
            job.add_task("long", "sleep 60 & wait; echo finished >> " + sys.argv[2])
            job.wait(quiet=True)
""")


def leftovers(job_id: str, attempt: str | None = None) -> list:
    import psutil
    out = []
    for p in psutil.process_iter():
        try:
            env = p.environ()
            if env.get("AZ_BATCH_JOB_ID") == job_id and attempt in (None, env.get("AZ_BATCH_TASK_ATTEMPT")):
                out.append(p)
        except (psutil.Error, OSError):
            pass
    return out


def orphan_a_running_task(home, tmp_path, job_id: str, out) -> Ledger:
    """Start a driver, wait until its task's process runs, SIGKILL the driver: the task's
    processes (in sessions of their own) are left running. Returns the ledger."""
    script = tmp_path / "driver.py"
    script.write_text(LONG_DRIVER)
    led = Ledger(home / "ledger.sqlite")
    proc = start_driver(script, job_id, out, home)
    wait_ledger(led, job_id, lambda c: c.get("running", 0) == 1, proc)
    deadline = time.monotonic() + 20
    while not any("sleep" in " ".join(p.cmdline()) for p in leftovers(job_id)):
        assert time.monotonic() < deadline, "the task's process never started"
        time.sleep(0.05)
    # Nodes close when their driver dies, killing its tasks: only a driver killed together
    # with its nodes (the out-of-memory killer, a lost machine session) orphans them. Stopped
    # first, the driver cannot restart the nodes it loses.
    # The nodes are forks of a launcher the driver started: every process below the driver but
    # the task's own goes, at once, so no node lives on to end the task.
    import psutil
    proc.send_signal(signal.SIGSTOP)
    tasks = {p.pid for p in leftovers(job_id)}
    for node in psutil.Process(proc.pid).children(recursive=True):
        if node.pid not in tasks:
            node.kill()
    kill(proc)
    assert leftovers(job_id), "the task's processes died with the driver: nothing to test"
    return led


def test_a_dead_drivers_task_processes_are_killed_before_the_task_runs_again(home, tmp_path):
    """Task processes outlive a SIGKILLed driver (they have sessions of their own); the
    resume ends them, so two copies of one task never run side by side."""
    job_id, out = "leftovers-e2e", tmp_path / "ran.txt"
    orphan_a_running_task(home, tmp_path, job_id, out)
    with bnb.Pool("local", dedicated=1) as pool:
        job = bnb.Job.attach(job_id, pool=pool)
        first = job.task("long").attempts[0]
        assert first["state"] == "interrupted" and "leftover processes killed" in first["message"]
        assert not leftovers(job_id, "1")
        job.terminate()
    deadline = time.monotonic() + 20
    while leftovers(job_id):         # the resumed attempt, killed by terminate
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not out.exists()          # the first copy never finished behind the resumed job's back


def test_terminating_a_dead_drivers_job_kills_its_task_processes(home, tmp_path):
    """``batchnb terminate`` (here: a read-only attach) on a job whose driver was SIGKILLed
    ends the task processes that outlived the driver, not only the ledger's record."""
    job_id, out = "orphans-terminated", tmp_path / "ran.txt"
    led = orphan_a_running_task(home, tmp_path, job_id, out)
    bnb.Job.attach(job_id, ledger=led).terminate()
    assert led.job(job_id)["state"] == "completed"
    deadline = time.monotonic() + 10
    while leftovers(job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(job_id) == []
