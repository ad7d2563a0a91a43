"""Two live processes, one job: one dispatches, the other watches or takes over.

A lease in the ledger names the dispatching process. A second process
gets ``LeaseHeld`` while the holder lives and renews; it may watch the job
read-only; when the holder stops renewing (here: frozen with SIGSTOP past
its lease) it takes the job over, and what the old holder would still write
on waking up is fenced off, so the ledger stays consistent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import batchnb as bnb
from batchnb.engine.ledger import Batch, Ledger

from .test_resume import by_state, driver_env, lines, wait_ledger

N_TASKS = 8

DRIVER = textwrap.dedent("""
    import sys
    import batchnb as bnb

    if __name__ == "__main__":
        job_id, out, gate = sys.argv[1], sys.argv[2], sys.argv[3]
        # Each task waits for the test to open the gate: the job cannot end before the test has
        # met its lease (under load, making the test's own pool took longer than the whole job).
        wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
        with bnb.Pool("local", dedicated=2) as pool:
            job = pool.job(job_id)
            job.add_tasks([bnb.TaskSpec(f"t{i}", f"{wait}; sleep 0.6; echo t{i} >> {out}") for i in range({n})])
            result = job.wait(quiet=True)     # keeps watching after losing the lease
            print("RESULT", result.counts, flush=True)
""").replace("{n}", str(N_TASKS))


def test_second_process_gets_lease_held_then_takes_over(home, tmp_path):
    job_id, out = "lease-e2e", tmp_path / "ran.txt"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    led = Ledger(home / "ledger.sqlite")
    env = driver_env(home, DASK_BATCHNB__LEASE_TTL="1.5s")
    gate = tmp_path / "gate"
    a = subprocess.Popen([sys.executable, str(script), job_id, str(out), str(gate)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        wait_ledger(led, job_id, lambda c: c.get("running", 0) >= 1 and sum(c.values()) == N_TASKS, a)
        with bnb.Pool("local", dedicated=2) as pool:
            with pytest.raises(bnb.LeaseHeld, match=f"{a.pid}"):
                pool.job(job_id)
            # Watching read-only works while the other process dispatches.
            watcher = bnb.Job.attach(job_id)
            assert sum(watcher.counts().values()) == N_TASKS
            with pytest.raises(bnb.SpecError, match="not attached to an open pool"):
                watcher.add_task("x", "true")

            os.kill(a.pid, signal.SIGSTOP)        # the holder stops renewing, but lives
            frozen_at = time.monotonic()
            running_at_freeze = by_state(led, job_id, "running")
            with pytest.raises(bnb.LeaseHeld):
                pool.job(job_id)                  # its lease has not expired yet
            deadline = time.monotonic() + 20
            while True:
                try:
                    job = pool.job(job_id)
                    break
                except bnb.LeaseHeld:
                    assert time.monotonic() < deadline, "the expired lease was never taken over"
                    time.sleep(0.1)
            took = time.monotonic() - frozen_at
            assert 0.5 < took < 10, took
            assert led.job(job_id)["lease_owner"] == pool._owner
            gate.touch()                          # the tasks may end now
            os.kill(a.pid, signal.SIGCONT)        # wakes up with results of attempts it no longer owns
            result = job.wait(timeout=60, quiet=True)
        assert result.counts == {"succeeded": N_TASKS}, result
        a_out, _ = a.communicate(timeout=60)
        assert a.returncode == 0, a_out
        assert "this process only watches it" in a_out, a_out
        assert f"RESULT {{'succeeded': {N_TASKS}}}" in a_out, a_out
    finally:
        gate.touch()            # a task still waiting ends by itself, whatever failed above
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait(10)

    assert running_at_freeze
    for tid in (f"t{i}" for i in range(N_TASKS)):
        attempts = led.attempts(job_id, tid)
        states = [x["state"] for x in attempts]
        # One recorded success per task, and it is the task's last attempt.
        assert states.count("succeeded") == 1 and states[-1] == "succeeded", (tid, states)
        row = led.task(job_id, tid)
        assert row["attempts"] == attempts[-1]["n"] == len(attempts), (tid, row["attempts"], states)
        if tid in running_at_freeze:
            assert states[:-1] == ["interrupted"] * (len(states) - 1) and len(states) >= 2, (tid, states)
    assert set(lines(out)) == {f"t{i}" for i in range(N_TASKS)}


def test_fence_drops_writes_for_a_job_another_process_leases(ledger):
    ledger.create_job("mine", {"id": "mine"}, "p", now=1.0)
    ledger.create_job("theirs", {"id": "theirs"}, "p", now=1.0)
    ledger.add_tasks("mine", [("a", 0, "{}", "running")], now=1.0)
    ledger.add_tasks("theirs", [("a", 0, "{}", "running")], now=1.0)
    import socket
    other = f"{socket.gethostname()}:{os.getppid()}:feedbeef"   # a live process that is not this one
    assert ledger.acquire_lease("theirs", other, ttl=60) is None
    b = Batch()
    for job in ("mine", "theirs"):
        b.task(job, "a", state="succeeded")
        b.attempt(job, "a", 1, state="succeeded")
    ledger.commit(b)
    assert ledger.task("mine", "a")["state"] == "succeeded"
    assert ledger.task("theirs", "a")["state"] == "running"
    assert ledger.attempts("theirs", "a") == []
    with pytest.raises(bnb.LeaseHeld, match="another process"):
        ledger.add_tasks("theirs", [("b", 1, "{}", "active")], now=2.0)
    # A dead holder on this host counts as gone at once; a holder elsewhere until it expires.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ledger.release_lease("theirs", other)
    assert ledger.acquire_lease("theirs", f"{socket.gethostname()}:{dead.pid}:0", ttl=60) is None
    assert ledger.lease("theirs") is None
    assert ledger.acquire_lease("theirs", "me", ttl=60) is None
    assert ledger.acquire_lease("theirs", "elsewhere:1:x", ttl=60) == "me"
