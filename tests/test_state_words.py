"""Issue 12: one word for each job state, and scripts and logs that behave.

The same state word (Azure's: active, terminating, completed) in ``JobResult``,
``job.state``, the view model, ``batchnb jobs`` and ``batchnb show``; "all tasks
complete" is a fact beside it. Scripts whose stderr is a file get plain progress
lines, failures and retries log one line each, the summary prints once; the CLI
ends quietly on a closed pipe and ``batchnb jobs`` creates no ledger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from batchnb.engine.ledger import Ledger
from batchnb.ui.model import JobModel

REPO = Path(__file__).resolve().parents[1]


def env_for(home: Path) -> dict:
    return {**os.environ, "BATCHNB_HOME": str(home),
            "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def cli(home: Path, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchnb.cli", *map(str, args)], env=env_for(home),
                          capture_output=True, text=True, timeout=120, cwd=str(home.parent), **kw)


def words(job, home: Path) -> dict:
    """The job's state word and "all tasks complete" as every place shows them."""
    r = job.result()
    view = JobModel.from_job(job).state()
    listed = {j["id"]: j for j in json.loads(cli(home, "jobs", "--json").stdout)}[job.id]
    shown = json.loads(cli(home, "show", job.id, "--json").stdout)
    show_text = cli(home, "show", job.id).stdout.splitlines()[0]
    html = job._repr_mimebundle_()["text/html"]
    return {"result": (r.state, r.all_tasks_complete), "job": job.state.value,
            "view": (view["job_state"], view["tasks_complete"]), "jobs": listed["state"],
            "show": (shown["state"], shown["all_tasks_complete"]), "show_text": show_text, "html": html}


@pytest.fixture
def pool(home):
    import batchnb as bnb
    with bnb.Pool("words", dedicated=1) as pool:       # the home's ledger: the CLI reads the same one
        yield pool


def test_a_noaction_job_reads_active_everywhere_with_all_tasks_complete_beside_it(pool, home):
    job = pool.job("noaction-job")                      # on_all_tasks_complete="noaction", Azure's default
    job.add_tasks([{"id": "a", "command": "true"}, {"id": "b", "command": "exit 3"}])
    result = job.wait(timeout=60, quiet=True)
    w = words(job, home)
    assert result.state == job.state.value == "active" and result.all_tasks_complete
    assert w["result"] == ("active", True) and w["job"] == "active" and w["jobs"] == "active"
    assert w["view"] == ("active", True) and w["show"] == ("active", True)
    assert w["show_text"].startswith("job noaction-job on pool words: active, all tasks complete")
    assert "finished" not in w["show_text"]
    assert "<span data-role='state'>active</span>" in w["html"] and "all tasks complete" in w["html"]
    # It still accepts tasks, as in Azure: the fact goes, the state word stays.
    job.add_task("c", "sleep 30")
    assert job.result().state == "active" and not job.result().all_tasks_complete
    assert JobModel.from_job(job).state()["tasks_complete"] is False
    job.terminate()
    assert job.result().state == job.state.value == "completed"


def test_a_terminate_job_reads_completed_everywhere(pool, home):
    job = pool.job("terminate-job", on_all_tasks_complete="terminate")
    job.add_task("a", "true")
    result = job.wait(timeout=60, quiet=True)
    w = words(job, home)
    assert result.state == job.state.value == "completed" and result.reason == "all_tasks_complete"
    assert w["result"] == ("completed", True) and w["jobs"] == "completed"
    assert w["view"][0] == "completed" and w["show"][0] == "completed"
    assert w["show_text"] == "job terminate-job on pool words: completed, all_tasks_complete"
    assert "<span data-role='state'>completed</span> (all_tasks_complete)" in w["html"]


def test_a_finished_job_in_a_kernel_redisplays_as_static_html(pool, monkeypatch):
    import batchnb.ui as ui
    monkeypatch.setattr(ui, "widgets_available", lambda: True)
    made = []
    monkeypatch.setattr(ui, "_widget_bundle", lambda widget: made.append(widget) or {"widget": True})
    job = pool.job("shown-again")
    job.add_task("a", "true")
    job.wait(timeout=60, quiet=True)
    bundle = job._repr_mimebundle_()
    assert "text/html" in bundle and not made and "all tasks complete" in bundle["text/html"]


def test_the_view_model_freezes_its_clock_once_the_tasks_ended():
    from batchnb.engine.events import TasksAdded, TaskStateChanged
    m = JobModel("j", created=0.0)
    m.apply([TasksAdded("j", 1, 0.0, {"active": 1}),
             TaskStateChanged("j", "a", "running", "active", 1.0, 1, "dedicated-0"),
             TaskStateChanged("j", "a", "succeeded", "running", 4.0, 1, "dedicated-0", 0)])
    s = m.state(now=100.0)
    # frozen at the tasks' span (first start to last end), not at now=100
    assert (s["job_state"], s["tasks_complete"], s["elapsed"], s["eta"]) == ("active", True, 3.0, None)


SCRIPT = textwrap.dedent("""
    import logging, sys
    import batchnb as bnb
    import batchnb.ui.progress as progress
    progress.PLAIN_EVERY = 0.5
    if "--log" in sys.argv:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with bnb.Pool("script", dedicated=1) as pool:
        job = pool.job("scripted")
        job.add_task("flaky", "exit 3", retry=bnb.Retry(max=1))
        job.add_tasks([{"id": f"t{i}", "command": "sleep 0.3"} for i in range(8)])
        job.wait(timeout=120)
""")


@pytest.mark.parametrize("logged", [False, True])
def test_a_script_with_stderr_to_a_file_writes_plain_lines_and_one_summary(tmp_path, logged):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        done = subprocess.run([sys.executable, str(script)] + (["--log"] if logged else []),
                              env=env_for(tmp_path / "home"), stdout=subprocess.PIPE, stderr=err, timeout=180,
                              cwd=str(tmp_path))
    text = err_path.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text, text[-3000:]                    # no carriage-return bar in a file
    progress = [ln for ln in text.splitlines() if ln.startswith("scripted: ") and "tasks ended" in ln]
    assert progress and progress[-1].startswith("scripted: 9/9 tasks ended"), text
    assert text.count("job scripted: all_tasks_complete") == 1, text     # the summary, once
    if logged:
        retry = [ln for ln in text.splitlines() if "task flaky attempt 1 failed" in ln and "retry 1" in ln]
        failed = [ln for ln in text.splitlines() if "task flaky failed after 2 attempt(s)" in ln]
        assert len(retry) == 1 and len(failed) == 1, text


def test_jobs_on_an_empty_home_creates_no_ledger_and_a_misspelt_state_is_an_error(tmp_path):
    home = tmp_path / "home"
    listed = cli(home, "jobs")
    assert listed.returncode == 0 and listed.stdout == "no jobs in the ledger\n" and listed.stderr == ""
    assert json.loads(cli(home, "jobs", "--json").stdout) == []
    assert not home.exists()
    bad = cli(home, "jobs", "--state", "finished")
    assert bad.returncode == 2 and "invalid choice: 'finished'" in bad.stderr
    assert not home.exists()


def test_a_closed_pipe_ends_the_cli_quietly(tmp_path):
    home = tmp_path / "home"
    led = Ledger(home / "ledger.sqlite")
    for i in range(3000):                                   # far more than a pipe holds
        led.create_job(f"job-{i:04d}", {"id": f"job-{i:04d}"}, "local", now=time.time())
    head = subprocess.run(f"{sys.executable} -m batchnb.cli jobs | head -1; echo \"rc=${{PIPESTATUS[0]}}\"",
                          shell=True, executable="/bin/bash", env=env_for(home), capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert head.stdout.splitlines()[0].startswith("JOB") and head.stdout.splitlines()[-1] == "rc=0", head
    assert head.stderr == "", head.stderr
    # The same with the reader gone before anything is written.
    proc = subprocess.Popen([sys.executable, "-m", "batchnb.cli", "jobs", "--json"], env=env_for(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path))
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""
