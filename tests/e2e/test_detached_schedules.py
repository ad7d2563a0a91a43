"""A job schedule of a detached pool fires in its agent with no process of the user's running,
and keeps the agent from stopping for idleness (issue 13, point 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import batchnb as bnb
from batchnb.agent.rpc import CLIENT_SILENCE
from detached_agents import agent_records
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import dask
import batchnb as bnb

def build(job):                       # a __main__ function: it travels to the agent by value
    job.add_task("tick", "echo tick from $AZ_BATCH_JOB_ID")
    job.submit(sum, [1, 2, 3], task_id="total")

# An agent with no job running and no client stops after 1 s ... unless a schedule is active.
with dask.config.set({"batchnb.agent-idle-timeout": "1s"}):
    pool = bnb.Pool("dsched", dedicated=1, detached=True)
sched = pool.schedule("tick", build, every="3s")
print("made", sched.state.value, flush=True)
pool.disconnect()
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHNB_HOME", str(home))
    import batchnb.engine.ledger
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    started: list[dict] = []
    yield home, started
    from batchnb.agent.registry import alive
    live = [r for r in started + agent_records(home) if isinstance(r.get("pid"), int) and alive(r)]
    for r in live:                  # only the agents this test started, by pid
        os.kill(r["pid"], signal.SIGTERM)
    try:
        wait_for(lambda: not any(alive(r) for r in live), 30, "the test's agent to stop")
    except AssertionError:
        for r in live:
            if alive(r):
                os.kill(r["pid"], signal.SIGKILL)


def test_a_detached_pools_schedule_fires_with_no_client_and_keeps_its_agent_up(home, tmp_path):
    home, agents = home
    (tmp_path / "make.py").write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "BATCHNB_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(tmp_path / "make.py")], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=180)
    agents += agent_records(home)
    assert out.returncode == 0 and "made active" in out.stdout, out.stdout + out.stderr
    left = time.time()
    ledger = bnb.Ledger(home / "ledger.sqlite")
    # The agent counts a client as there for CLIENT_SILENCE after its last call; past that, and
    # between runs (3 s apart, each job a second or so), it has no job and no client for longer
    # than its 1 s idle timeout, many times over.
    quiet_from = left + CLIENT_SILENCE + 3

    def completed_late_runs() -> list[str]:
        assert agent_records(home), "the agent stopped while its schedule was active"
        runs = [r for r in ledger.schedule_runs("tick") if r["outcome"] == "started"]
        return [r["job_id"] for r in runs if r["time"] > quiet_from
                and (ledger.job(r["job_id"]) or {}).get("state") == "completed"]
    wait_for(lambda: len(completed_late_runs()) >= 2, 120, "two scheduled jobs made long after the client left")
    made = [r["job_id"] for r in ledger.schedule_runs("tick") if r["outcome"] == "started"]
    assert made[:3] == ["tick-job-1", "tick-job-2", "tick-job-3"]
    assert [a["name"] for a in agent_records(home)] == ["dsched"]
    pool = bnb.Pool.connect("dsched")
    try:
        [sched] = pool.schedules()
        assert sched.state == bnb.ScheduleState.ACTIVE
        job = sched.jobs()[1]
        assert job.task("total").result() == 6
        assert job.task("tick").stdout().strip() == "tick from tick-job-2"
        sched.delete()
        assert pool.schedules() == []
    finally:
        pool.close()
    wait_for(lambda: not agent_records(home), 60, "the agent to stop")
