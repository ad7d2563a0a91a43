"""A client of a detached pool reads everything through its agent, never the agent's files
(issue 13, point 1: a remote pool's client is on another machine than its agent's folder).

The agent is a real ``python -m batchnb.agent`` process in a batchnb home of
its own; the client is another Python process with another batchnb home,
which reaches the agent by its address with credentials the owner issued
(``pool.credentials``). An audit hook in the client (``sys.addaudithook``)
records every file it opens and every SQLite database it connects to; none
may be in the agent's home (its ledger, registry, node folders).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detached_agents import detached_pool, script_env

CLIENT = r'''
import json, os, sys
seen = []

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        seen.append(os.path.abspath(os.fsdecode(args[0])))
    elif event == "sqlite3.connect":
        seen.append(os.path.abspath(os.fsdecode(args[0])))
sys.addaudithook(hook)

import batchnb as bnb
from batchnb.ui.model import JobModel

address, creds = sys.argv[1], sys.argv[2]
pool = bnb.Pool.connect(address, security=creds)
try:
    job = pool.job("remote-reads", max_task_retries=0)
    ok = job.add_task("ok", "echo from the agent node")
    bad = job.add_task("bad", "echo line one >&2; echo it broke >&2; exit 3")
    squares = job.map(pow, range(3), [2] * 3)
    result = job.wait(timeout=120, quiet=True)
    out = {
        "counts": job.counts(), "task_counts": [job.task_counts().succeeded, job.task_counts().failed], "ok": result.ok,
        "failures": [(f["task_id"], f["exit_code"]) for f in result.failures],
        "states": sorted((i.id, i.state) for i in job.tasks()),
        "results": [s.result() for s in squares],
        "stdout": ok.stdout(), "tail": bad.tail(1, stream="stderr"), "bad_state": bad.state.value,
        "attempts": len(bad.attempts), "groups": [g.get("exit_code") for g in job.failures()],
        "model": JobModel.from_job(job).state(),
        "frame": list(job.frame().index), "stats_attempts": job.stats().attempts,
        "job_state": job.state.value,
    }
finally:
    pool.disconnect()
print("RESULT " + json.dumps({"out": out, "seen": seen}, default=str))
'''


@pytest.fixture
def shared(tmp_path):
    with detached_pool(tmp_path / "agent-home", "remote-reads", dedicated=1, task_slots_per_node=2) as pool:
        creds = pool.credentials("far-away", tmp_path / "creds")
        pool.grant("far-away", "contributor")
        yield pool, creds


def test_a_client_with_its_own_home_runs_a_job_reading_nothing_of_the_agents_folder(shared, tmp_path):
    pool, creds = shared
    agent_home = (tmp_path / "agent-home").resolve()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    done = subprocess.run([sys.executable, str(script), pool.address, str(creds)], capture_output=True, text=True,
                          env=script_env(tmp_path / "client-home"), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    out = got["out"]
    assert out["counts"]["succeeded"] == 4 and out["counts"]["failed"] == 1
    assert out["task_counts"] == [4, 1] and not out["ok"]
    assert out["failures"] == [["bad", 3]] and out["groups"] == [3]
    assert ["bad", "failed"] in out["states"] and ["ok", "succeeded"] in out["states"]
    assert out["results"] == [0, 1, 4]
    assert out["stdout"] == "from the agent node\n"
    assert out["tail"] == "it broke\n" and out["bad_state"] == "failed" and out["attempts"] == 1
    model = out["model"]
    assert model["counts"]["succeeded"] == 4 and model["failures_total"] == 1
    assert [f["task_id"] for f in model["failures"]] == ["bad"] and "it broke" in model["failures"][0]["stderr"]
    assert sorted(out["frame"]) == sorted(["ok", "bad", "pow-0", "pow-1", "pow-2"])
    assert out["stats_attempts"] == 5
    # The client wrote its own home, if anything; it opened nothing of the agent's.
    touched = [p for p in got["seen"] if p.startswith(str(agent_home)) or p.startswith(str(tmp_path / "agent-home"))]
    assert touched == [], touched
    # The agent's own ledger has the job (the client's home does not).
    assert pool.job("remote-reads").counts()["failed"] == 1


def test_the_agent_serves_only_reads_and_a_job_reader_only_its_jobs_reads(shared, tmp_path):
    import batchnb as bnb
    pool, _ = shared
    pool.job("mine").add_task("a", "true")
    pool.job("theirs").add_task("b", "true")
    with pytest.raises(AttributeError, match="through its agent"):
        pool.ledger.delete_job                                  # a write is no query the proxy forwards
    with pytest.raises(bnb.SpecError, match="not a ledger query") as err:
        pool._agent.call("ledger_read", method="delete_job", args=[], kwargs={}, job_id="mine")
    assert err.value.field == "method"
    with pytest.raises(bnb.SpecError, match="only ask SELECT"):
        pool.ledger._query("DELETE FROM jobs")
    with pytest.raises(Exception, match="readonly|read-only|attempt to write"):
        pool.ledger._query("WITH gone AS (SELECT 1) DELETE FROM jobs")     # SQLite opened it read-only
    assert pool.ledger.job("mine")["id"] == "mine"

    creds = pool.credentials("one-job", tmp_path / "one-job")
    pool.grant("one-job", "reader", job="mine")
    other = bnb.Pool.connect(pool.address, security=creds)
    try:
        assert other.ledger.job("mine")["id"] == "mine" and sum(other.ledger.task_counts("mine").values()) == 1
        assert other.job("mine").task("a").task_id == "a"
        with pytest.raises(bnb.PermissionDenied, match="theirs"):
            other.ledger.tasks("theirs")
        with pytest.raises(bnb.PermissionDenied):
            other.ledger._query("SELECT * FROM roles")          # any table: a role on the pool
    finally:
        other.disconnect()
