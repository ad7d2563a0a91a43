"""The ``batchnb`` command, run for real as a subprocess against a temporary home.

Every verb is exercised: run, jobs, tasks, logs, show, resume, terminate,
prune, demo (and the exit codes 0 / 1 / 2 a scheduler acts on).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from batchnb.engine.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]
JOB_YAML = textwrap.dedent("""
    id: cli-job
    pool: {name: local, dedicated: 2}
    tasks:
      - {id: a, command: "echo hello from a"}
      - {id: b, command: "echo broken >&2; exit 3", depends_on: [a]}
      - {id: c, command: [sh, -c, "echo C; echo warn >&2"], depends_on: [a]}
      - {id: d, command: "echo never", depends_on: [b]}
""")


def env_for(home: Path, **extra) -> dict:
    # This checkout's package, whatever `pip install -e` points at elsewhere.
    return {**os.environ, "BATCHNB_HOME": str(home), "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            **extra}


def bnb(home: Path, *args, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchnb.cli", *map(str, args)], env=env_for(home, **extra),
                          capture_output=True, text=True, timeout=timeout, cwd=str(home.parent))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home holding one finished job (2 succeeded, 1 failed, 1 blocked) made by `batchnb run`."""
    home = tmp_path_factory.mktemp("cli") / "home"
    home.mkdir()
    (home.parent / "job.yaml").write_text(JOB_YAML)
    done = bnb(home, "run", home.parent / "job.yaml", "--json")
    assert done.returncode == 1, done.stderr
    (home.parent / "run-output.json").write_text(done.stdout)
    return home


def test_console_script_is_declared():
    from importlib.metadata import entry_points
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "batchnb"]
    assert ep.value == "batchnb.cli:main"


def test_run_prints_json_and_exits_1_when_a_task_failed(home):
    out = json.loads((home.parent / "run-output.json").read_text())
    assert out["counts"] == {"succeeded": 2, "failed": 1, "blocked": 1} and out["ok"] is False
    assert out["failures"][0]["task_id"] == "b" and out["failures"][0]["exit_code"] == 3
    # Running the same file again resumes the job: nothing is run twice.
    again = bnb(home, "run", home.parent / "job.yaml", "--json", "--pool-nodes", "1")
    assert again.returncode == 1 and json.loads(again.stdout)["counts"] == out["counts"]
    tasks = json.loads(bnb(home, "tasks", "cli-job", "--json").stdout)
    assert {t["id"]: t["attempts"] for t in tasks} == {"a": 1, "b": 1, "c": 1, "d": 0}


def test_run_an_azure_task_collection_exits_0_with_progress(home, tmp_path):
    coll = {"value": [{"id": str(i), "commandLine": f"/bin/sh -c 'echo part {i}'"} for i in range(1, 4)] + [
        {"id": "merge", "commandLine": "echo merged", "dependsOn": {"taskIdRanges": [{"start": 1, "end": 3}]}}]}
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(coll))
    done = bnb(home, "run", path, "--job-id", "azure-job", "--pool-nodes", "2")
    assert done.returncode == 0, done.stderr
    assert "job azure-job: all_tasks_complete" in done.stdout and "4 succeeded" in done.stdout
    assert "4/4" in done.stderr          # the terminal progress bar
    assert bnb(home, "logs", "azure-job", "merge").stdout == "merged\n"
    shown = bnb(home, "show", "azure-job")
    assert shown.returncode == 0 and "tasks: 4 (succeeded=4)" in shown.stdout    # all succeeded: exit 0


def test_bad_input_exits_2(home, tmp_path):
    missing = bnb(home, "run", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "cannot be read" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntasks:\n  - {id: a, command: x, max_wall_clock: soon}\n")
    res = bnb(home, "run", bad)
    assert res.returncode == 2 and "max_wall_clock: 'soon' is invalid" in res.stderr
    assert "Traceback" not in res.stderr
    for args in (("show", "ghost"), ("tasks", "ghost"), ("logs", "cli-job", "zz"), ("logs", "ghost", "a"),
                 ("resume", "ghost"), ("terminate", "ghost"), ("prune", "--older-than", "someday"),
                 ("logs", "cli-job", "a", "--attempt", "9"), ("frobnicate",)):
        res = bnb(home, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr


MALFORMED = {
    # Azure JSON with a wrong type at a field: a TypeError inside from_azure, a traceback and exit 1 before.
    "azure.json": ('{"value": [{"id": "a", "commandLine": "true", "resourceFiles": [{"httpUrl": 5, "filePath": "x"}]}]}',
                   "task 'a' resourceFiles[0].httpUrl: 5 is invalid"),
    # A string where Azure has a list: it became the dependencies a, b and c.
    "deps.json": ('{"value": [{"id": "a", "commandLine": "true", "dependsOn": {"taskIds": "abc"}}]}',
                  "dependsOn.taskIds: 'abc' is invalid: expected a JSON array"),
    "binary.yaml": (b"id: j\n\xff\xfe\x00", "is not UTF-8 text"),
    "nested.json": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "aliases.yaml": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdefg", "bcdefgh")) + "id: j\ntasks: *h\n",
        "expands to more than"),
    "nul.yaml": ('id: j\ntasks:\n  - {id: a, command: "true", inputs: {"in\\0": "memory://x/in"}}\n',
                 "tasks[0].inputs path: 'in\\x00' is invalid: a path cannot hold a NUL character"),
}


def test_malformed_job_files_exit_2_with_one_line(home, tmp_path):
    for name, (content, message) in MALFORMED.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        res = bnb(home, "run", path, timeout=60)
        assert res.returncode == 2, (name, res.stderr[-2000:])
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("batchnb: "), (name, res.stderr[-2000:])
        assert message in res.stderr, (name, res.stderr)


def test_jobs(home):
    text = bnb(home, "jobs")
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].split()[:4] == ["JOB", "STATE", "POOL", "TASKS"]
    assert any(line.startswith("cli-job ") and "failed=1" in line for line in text.stdout.splitlines())
    rows = json.loads(bnb(home, "jobs", "--json").stdout)
    job = next(r for r in rows if r["id"] == "cli-job")
    assert job["counts"] == {"succeeded": 2, "failed": 1, "blocked": 1} and job["pool"] == "local"


def test_tasks(home):
    text = bnb(home, "tasks", "cli-job")
    assert text.returncode == 0
    lines = {line.split()[0]: line for line in text.stdout.splitlines()[1:]}
    assert "failed" in lines["b"] and " 3 " in lines["b"] and "blocked" in lines["d"]
    failed = json.loads(bnb(home, "tasks", "cli-job", "--state", "failed", "--json").stdout)
    assert [(t["id"], t["exit_code"], t["category"]) for t in failed] == [("b", 3, "exit_code")]


def test_logs(home):
    assert bnb(home, "logs", "cli-job", "a").stdout == "hello from a\n"
    assert bnb(home, "logs", "cli-job", "b", "--stderr").stdout == "broken\n"
    assert bnb(home, "logs", "cli-job", "c", "--stderr", "--attempt", "1").stdout == "warn\n"
    assert bnb(home, "logs", "cli-job", "d").stdout == ""          # never ran: nothing, and no error


def test_show(home):
    text = bnb(home, "show", "cli-job")
    assert text.returncode == 1                                    # some task failed
    assert "tasks: 4 (succeeded=2 failed=1 blocked=1)" in text.stdout and "b: failed exit 3" in text.stdout
    data = json.loads(bnb(home, "show", "cli-job", "--json").stdout)
    assert data["all_tasks_complete"] and data["total"] == 4 and data["dispatched_by"] is None


def interrupted_job(home: Path, job_id: str, holder: str) -> None:
    """What a killed driver leaves: one task done, one running, two waiting, its lease."""
    led = Ledger(home / "ledger.sqlite")
    led.create_job(job_id, {"id": job_id, "pool": {"name": "local", "dedicated": 1}}, "local", now=time.time())
    rows = [("t0", 0, json.dumps({"id": "t0", "command": "echo 0"}), "succeeded"),
            ("t1", 1, json.dumps({"id": "t1", "command": "echo 1"}), "running"),
            ("t2", 2, json.dumps({"id": "t2", "command": "echo 2"}), "active"),
            ("t3", 3, json.dumps({"id": "t3", "command": "echo 3", "depends_on": ["t2"]}), "pending")]
    led.add_tasks(job_id, rows, now=time.time())
    with led._tx() as con:
        con.execute("UPDATE tasks SET attempts = 1 WHERE job_id = ? AND id IN ('t0', 't1')", (job_id,))
        con.execute("INSERT INTO attempts(job_id, task_id, n, state) VALUES (?, 't0', 1, 'succeeded')", (job_id,))
        con.execute("INSERT INTO attempts(job_id, task_id, n, state) VALUES (?, 't1', 1, 'running')", (job_id,))
    assert led.acquire_lease(job_id, holder, ttl=300) is None


def test_resume(home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    interrupted_job(home, "halfway", f"{socket.gethostname()}:{dead.pid}:0")
    interrupted_job(home, "busy", f"{socket.gethostname()}:{os.getpid()}:0")     # this test process: alive
    held = bnb(home, "resume", "busy")
    assert held.returncode == 1 and "dispatched by a live process" in held.stderr
    done = bnb(home, "resume", "halfway", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 4}
    tasks = {t["id"]: t for t in json.loads(bnb(home, "tasks", "halfway", "--json").stdout)}
    assert tasks["t0"]["attempts"] == 1 and tasks["t1"]["attempts"] == 2 and tasks["t1"]["requeues"] == 1
    led = Ledger(home / "ledger.sqlite")
    assert [a["state"] for a in led.attempts("halfway", "t1")] == ["interrupted", "succeeded"]


DRIVER = textwrap.dedent("""
    import sys
    import batchnb as bnb
    if __name__ == "__main__":
        with bnb.Pool("local", dedicated=1) as pool:
            job = pool.job("long")
            job.add_tasks([bnb.TaskSpec("sleepy", "sleep 60"), bnb.TaskSpec("next", "true", depends_on=["sleepy"])])
            print("RESULT", job.wait(quiet=True).reason, flush=True)
""")


def test_terminate_a_job_another_process_drives(home, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script)], env=env_for(home, DASK_BATCHNB__LEASE_TTL="1.5s"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        led = Ledger(home / "ledger.sqlite")
        deadline = time.monotonic() + 30
        while not (led.job("long") and led.task_counts("long").get("running")):
            assert time.monotonic() < deadline and driver.poll() is None, "the driver never ran its task"
            time.sleep(0.05)
        t0 = time.monotonic()
        res = bnb(home, "terminate", "long", "--json")
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        assert data["state"] == "completed" and data["reason"] == "terminated"
        assert data["counts"] == {"cancelled": 2}
        out, _ = driver.communicate(timeout=30)
        assert "RESULT terminated" in out and time.monotonic() - t0 < 20
        assert led.attempts("long", "sleepy")[-1]["state"] == "terminated"
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGKILL)
            driver.wait(10)


def test_prune(home):
    assert bnb(home, "prune").stdout.strip() == "removed 0 job(s)"      # nothing is 7 days old
    dry = json.loads(bnb(home, "prune", "--older-than", "0", "--dry-run", "--json").stdout)
    assert "cli-job" in dry["removed"] and dry["dry_run"]
    res = bnb(home, "prune", "--older-than", "0s")
    assert res.returncode == 0 and "cli-job" in res.stdout
    assert "cli-job" not in {j["id"] for j in json.loads(bnb(home, "jobs", "--json").stdout)}
    assert not list((home / "nodes").glob("*/*/workitems/cli-job"))


def test_demo(tmp_path):
    res = bnb(tmp_path, "demo", "--nodes", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "flaky task: 3 attempts, final state succeeded" in res.stdout
