"""A job's preparation and release tasks on a node, without a pool: their folders, Azure's
variables, staged inputs, retries, and a kill that cuts them short."""

from __future__ import annotations

import threading
import time

import pytest

import batchnb as bnb
from batchnb.node import attempt, proctree
from batchnb.node.jobprep import PREP_TASK, prep_key, run_job_prep, run_job_release
from waiting import wait_for


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setenv("AZ_BATCH_NODE_ID", "dedicated-3")      # outside a Dask worker the runner reads it
    return tmp_path


def test_prep_runs_in_its_folder_with_its_inputs_and_variables(node, tmp_path):
    src = tmp_path / "req.txt"
    src.write_text("numpy\n")
    prep = bnb.JobPrep('cat req.txt; echo "$AZ_BATCH_TASK_ID|$AZ_BATCH_JOB_ID|$MODE|'
                       '${AZ_BATCH_JOB_PREP_DIR-unset}|${AZ_BATCH_HOST_LIST-unset}"; pwd',
                       inputs={"req.txt": src.as_uri()}, env={"MODE": "fast"})
    [rec] = run_job_prep("j1", prep, "p", str(node))
    folder = node / "dedicated-3" / "workitems" / "j1" / "job-1" / "jobpreparation"
    assert (rec["exit_code"], rec["category"], rec["task_dir"]) == (0, None, str(folder))
    assert rec["stdout"].splitlines() == ["numpy", "jobpreparation|j1|fast|unset|unset", str(folder / "wd")]
    assert (folder / "stdout.txt").read_text() == rec["stdout"]


def test_prep_retries_per_its_retry_and_keeps_every_attempt(node):
    prep = bnb.JobPrep('echo "try $AZ_BATCH_TASK_ATTEMPT" >&2; [ "$AZ_BATCH_TASK_ATTEMPT" = 3 ]',
                       retry=bnb.Retry(max=4, delay=0.05))
    recs = run_job_prep("j2", prep, "p", str(node))
    assert [(r["attempt"], r["exit_code"], r["category"]) for r in recs] == [
        (1, 1, "exit_code"), (2, 1, "exit_code"), (3, 0, None)]
    assert [r["stderr"] for r in recs] == ["try 1\n", "try 2\n", "try 3\n"]
    failing = run_job_prep("j3", bnb.JobPrep("exit 2", max_wall_clock=5), "p", str(node))
    assert [(r["exit_code"], r["message"]) for r in failing] == [(2, "exit code 2")]    # no retries by default
    missing = run_job_prep("j4", bnb.JobPrep("true", inputs={"x": (node / "nope").as_uri()}), "p", str(node))
    assert [r["category"] for r in missing] == ["preprocessing"]


def test_a_kill_stops_a_prep_and_its_retries(node):
    prep = bnb.JobPrep("sleep 30", retry=bnb.Retry(max=5))
    out = []
    runner = threading.Thread(target=lambda: out.extend(run_job_prep("j5", prep, "p", str(node))))
    t0 = time.monotonic()
    runner.start()
    wait_for(lambda: prep_key("j5") in attempt._running, 20, "the preparation to start")
    attempt.kill_attempts([prep_key("j5")])
    runner.join(20)
    assert not runner.is_alive() and time.monotonic() - t0 < 20
    assert [r["category"] for r in out] == ["terminated"]     # not retried: its job ended
    assert prep_key("j5") not in attempt._terminated


def test_release_ends_the_jobs_processes_first_and_sees_the_prep_folder(node):
    proc = proctree.subprocess.Popen(["sleep", "60"], start_new_session=True)
    key = ("j6", "t1", 1)
    with attempt._running_lock:
        attempt._running[key] = proc                  # a task of the job still running on this node
    try:
        rec = run_job_release("j6", bnb.JobRelease('echo "$AZ_BATCH_TASK_ID $AZ_BATCH_JOB_PREP_WORKING_DIR"'),
                              "p", str(node))
    finally:
        with attempt._running_lock:
            attempt._running.pop(key, None)
            attempt._terminated.discard(key)
    assert proc.poll() is not None                    # killed before the release ran
    prep = node / "dedicated-3" / "workitems" / "j6" / "job-1" / PREP_TASK
    assert (rec["exit_code"], rec["stdout"]) == (0, f"jobrelease {prep / 'wd'}\n")
    assert rec["task_dir"].endswith("/workitems/j6/job-1/jobrelease")
