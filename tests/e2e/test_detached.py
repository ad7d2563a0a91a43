"""Detached pools: jobs that outlive the process that made them (issue 13).

Every test has a batchnb home of its own; the agents its scripts start are
stopped by pid in a finalizer (their records in that home name them), so no
agent outlives its test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detached_agents import agent_records, end_script, note_agents, script_env, start_script, stop_agents
from waiting import wait_for



@pytest.fixture
def detached_home(tmp_path, monkeypatch):
    """A batchnb home for this test's scripts and this process; its agents are stopped after."""
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHNB_HOME", str(home))
    import batchnb.engine.ledger
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    noted: set = set()
    yield home, noted
    stop_agents(home, noted, timeout=30)


CREATOR = """
    import sys
    import batchnb as bnb

    out = sys.argv[1]
    pool = bnb.Pool("survivor", dedicated=2, task_slots_per_node=2, detached=True)
    job = pool.job("appends")
    job.add_tasks([{"id": f"t{i:03d}", "command": f"sleep 0.05; echo t{i:03d} >> {out}"} for i in range(200)])
    print("submitted", flush=True)
    job.wait()
"""

WATCHER = """
    import collections
    import sys
    import batchnb as bnb

    pool = bnb.Pool.connect("survivor")
    job = pool.job("appends")
    result = job.wait(timeout=240, quiet=True)
    print("counts", sorted(result.counts.items()), flush=True)
    print("attempts", collections.Counter(len(job.task(t.id).attempts) for t in job.tasks()), flush=True)
    pool.disconnect()
"""


def test_a_killed_creator_leaves_its_job_running_and_each_task_runs_once(tmp_path, detached_home):
    import batchnb as bnb
    home, noted = detached_home
    out = tmp_path / "out.txt"
    creator = start_script(tmp_path, "creator", CREATOR, home, str(out))
    try:
        wait_for(lambda: out.exists() or creator.poll() is not None, 120, "the first task to run")
        assert creator.poll() is None, creator.stdout.read()
        note_agents(home, noted)
        os.killpg(creator.pid, signal.SIGKILL)          # the kernel dies, with everything in its group
        creator.wait(10)
    finally:
        end_script(creator)
    lines_at_kill = len(out.read_text().splitlines())
    assert lines_at_kill < 200, "the job was over before its creator was killed"
    # No process of the user's runs now; the agent goes on. Another client sees the same job.
    watcher_here = bnb.Pool.connect("survivor")
    try:
        job = watcher_here.job("appends")
        watcher = start_script(tmp_path, "watcher", WATCHER, home)
        try:
            text, _ = watcher.communicate(timeout=300)
        finally:
            end_script(watcher)
        assert "counts [('succeeded', 200)]" in text.splitlines(), text
        assert "attempts Counter({1: 200})" in text.splitlines(), text
        assert job.counts()["succeeded"] == 200      # what this client sees is what the other saw
        lines = out.read_text().splitlines()
        assert len(lines) == 200 and len(set(lines)) == 200, (len(lines), len(set(lines)))
    finally:
        watcher_here.close()
    assert bnb.pools() == []


INTERRUPTED = """
    import sys
    import batchnb as bnb

    # No `if __name__ == "__main__":` guard: neither the agent nor its nodes import this file.
    with open(sys.argv[1], "a") as fh:
        fh.write("imported\\n")

    def square(x):
        return x * x

    pool = bnb.Pool("interrupted", dedicated=2, detached=True)
    job = pool.job("goes-on")
    job.add_task("first", f"touch {sys.argv[2]}; sleep 2")
    squares = job.map(square, range(4), depends_on=["first"])
    try:
        job.wait(timeout=120, quiet=True)
        print("not interrupted", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_sigint_to_the_creators_group_does_not_stop_a_detached_job(tmp_path, detached_home):
    import batchnb as bnb
    home, noted = detached_home
    imports, started = tmp_path / "imports.txt", tmp_path / "started"
    proc = start_script(tmp_path, "interrupted", INTERRUPTED, home, str(imports), str(started))
    try:
        wait_for(lambda: started.exists() or proc.poll() is not None, 120, "the first task to run")
        assert proc.poll() is None, proc.stdout.read()
        note_agents(home, noted)
        os.killpg(proc.pid, signal.SIGINT)              # what Jupyter's interrupt button does
        text, _ = proc.communicate(timeout=60)
    finally:
        end_script(proc)
    assert "interrupted" in text.splitlines(), text
    pool = bnb.Pool.connect("interrupted")
    try:
        job = pool.job("goes-on")
        result = job.wait(timeout=120, quiet=True)
        assert result.counts == {"succeeded": 5}, result
        # Python tasks defined in the script's __main__ travelled by value.
        assert sorted(job.task(f"square-{i}").result() for i in range(4)) == [0, 1, 4, 9]
    finally:
        pool.close()
    assert imports.read_text().splitlines() == ["imported"]
    assert bnb.pools() == []


def _cli(home: Path, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchnb.cli", *args], env=env or script_env(home), cwd=home.parent,
                          capture_output=True, text=True, timeout=timeout)


def test_the_cli_starts_a_pool_submits_waits_and_stops_it(tmp_path, detached_home):
    home, noted = detached_home
    (tmp_path / "ok.yaml").write_text("id: fine\ntasks:\n  - {id: a, command: 'echo A'}\n"
                                      "  - {id: b, command: 'echo B', depends_on: [a]}\n")
    (tmp_path / "bad.yaml").write_text("id: broken\ntasks:\n  - {id: a, command: 'exit 3'}\n")
    started = _cli(home, "pool", "start", "cli-pool", "--dedicated", "1")
    note_agents(home, noted)
    assert started.returncode == 0, started.stderr
    listed = _cli(home, "pool", "list", "--json")
    assert [p["name"] for p in json.loads(listed.stdout)] == ["cli-pool"], listed.stdout + listed.stderr
    submitted = _cli(home, "submit", str(tmp_path / "ok.yaml"), "--pool", "cli-pool", timeout=60)
    assert submitted.returncode == 0 and submitted.stdout.strip() == "fine", submitted.stdout + submitted.stderr
    bad = _cli(home, "submit", str(tmp_path / "bad.yaml"), "--pool", "cli-pool", timeout=60)
    assert bad.returncode == 0 and bad.stdout.strip() == "broken", bad.stderr
    waited = _cli(home, "wait", "fine", "--pool", "cli-pool", "--json")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert json.loads(waited.stdout)["counts"] == {"succeeded": 2}
    failed = _cli(home, "wait", "broken", "--quiet")          # from the ledger, no pool named
    assert failed.returncode == 1, failed.stdout + failed.stderr
    unknown = _cli(home, "submit", str(tmp_path / "ok.yaml"), "--pool", "no-such-pool", timeout=60)
    assert unknown.returncode == 2 and "no-such-pool" in unknown.stderr, unknown.stderr
    stopped = _cli(home, "pool", "stop", "cli-pool", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(_cli(home, "pool", "list", "--json").stdout) == []


IDLE = """
    import batchnb as bnb

    pool = bnb.Pool("idle", dedicated=1, detached=True)
    pool.job("slow").add_task("a", "sleep 4")
    pool.disconnect()
    print("left", flush=True)
"""


def test_an_idle_agent_stops_itself_after_its_jobs_and_says_so_in_the_ledger(tmp_path, detached_home):
    import batchnb as bnb
    from batchnb.engine.ledger import Ledger
    home, noted = detached_home
    path = tmp_path / "idle.py"
    path.write_text(textwrap.dedent(IDLE))
    # No client stays, but a job runs longer than the idle timeout: the agent waits for it.
    made = subprocess.run([sys.executable, str(path)], env=script_env(home, DASK_BATCHNB__AGENT_IDLE_TIMEOUT="2s"),
                          capture_output=True, text=True, timeout=180)
    note_agents(home, noted)
    assert made.stdout.splitlines() == ["left"], made.stdout + made.stderr
    wait_for(lambda: not agent_records(home), 120, "the idle agent to stop and remove its record")
    assert bnb.pools() == []
    from batchnb.agent.registry import alive
    wait_for(lambda: not any(alive({"pid": pid, "process_created": c}) for pid, c in noted), 60,
             "the agent's process to end")
    ledger = Ledger(home / "ledger.sqlite")
    assert ledger.task_counts("slow") == {"succeeded": 1}
    stops = [e for e in ledger.events() if e["kind"] == "pool" and e["state"] == "stopped"]
    data = [json.loads(e["data"]) for e in stops]
    assert [d["pool"] for d in data] == ["idle"]
    assert data[0]["reason"].startswith("idle") and "agent-idle-timeout" in data[0]["reason"]
    assert ledger.last_task_end("slow") <= stops[0]["time"]
