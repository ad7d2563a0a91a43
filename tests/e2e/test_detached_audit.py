"""A detached pool's audit log, read through its agent (issue 16, point 4).

The pool's agent is a real ``python -m batchnb.agent`` process in this
test's own batchnb home; what a client does reaches the pool's methods in the
agent, which records it; ``pool.audit()`` of another client (``Pool.connect``)
asks the agent for it. The agent is stopped at the end, by pid if closing it failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import batchnb as bnb
from detached_agents import detached_pool

REPO = Path(__file__).resolve().parents[2]

@pytest.fixture
def detached(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))   # this test's CLI runs see the same home
    with detached_pool(tmp_path / "home", "audited-d", dedicated=1) as pool:
        yield pool


def test_a_connected_client_reads_through_the_agent_what_clients_did(detached):
    pool = detached
    job = pool.job("dj")
    job.add_tasks([bnb.TaskSpec(f"t{i}", "true") for i in range(3)])
    with pytest.raises(bnb.SpecError):
        job.add_task("t0", "false")                 # refused in the agent: recorded there as failed
    job.wait(timeout=120, quiet=True)
    pool.resize(dedicated=2)

    other = bnb.Pool.connect("audited-d")
    try:
        records = other.audit()
        mine = other.audit(job="dj")
    finally:
        other.disconnect()
    assert all(isinstance(r, bnb.AuditRecord) for r in records)
    got = [(r.action, r.target, r.outcome.split(":")[0], r.detail) for r in records]
    assert got == [
        ("pool-create", "pool:audited-d", "ok", "backend local, dedicated 1, spot 0"),
        ("job-create", "job:dj", "ok", None),
        ("task-add", "job:dj", "ok", "3 tasks"),
        ("task-add", "job:dj", "failed", "1 task"),
        ("pool-resize", "pool:audited-d", "ok", "dedicated 2"),
    ], got
    # The client's actions are recorded under one identity (the one the agent knows it by).
    assert len({r.identity for r in records[1:]}) == 1 and records[1].identity
    assert [r.action for r in mine] == ["job-create", "task-add", "task-add"]

    # The command asks the running pool's agent too (with the owner's credentials of this home).
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "batchnb.cli", "audit", "--pool", "audited-d", "--json"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [(r["action"], r["outcome"]) for r in json.loads(out.stdout)] == [(r.action, r.outcome) for r in records]

    pool.close()
    from batchnb.engine import audit
    closed = audit.read(bnb.Ledger(), action="pool-close")
    assert [(r.target, r.outcome, r.identity) for r in closed] == [("pool:audited-d", "ok", records[1].identity)]
