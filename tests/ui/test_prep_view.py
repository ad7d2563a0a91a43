"""The job view shows a line per node for the job's preparation and release runs, and says
so when the preparation failed on every node."""

from __future__ import annotations

from waiting import wait_for

import batchnb as bnb
from batchnb.ui.model import JobModel


def test_prep_and_release_lines_per_node(pool2, unique):
    job = pool2.job(unique, prep=bnb.JobPrep("echo ready"), release=bnb.JobRelease("echo bye"))
    job.add_tasks([{"id": f"t{i}", "command": "true"} for i in range(4)])
    job.wait(timeout=60, quiet=True)
    job.terminate()
    wait_for(lambda: all(p["release"] == "succeeded" for p in JobModel.from_job(job).state()["prep"]), 30,
             "release runs")
    lines = JobModel.from_job(job).state()["prep"]
    assert lines and {p["prep"] for p in lines} == {"succeeded"} and {p["release"] for p in lines} == {"succeeded"}
    assert {p["node"] for p in lines} <= {"dedicated-0", "dedicated-1"}


def test_a_preparation_failed_everywhere_says_so(pool2, unique):
    job = pool2.job(unique, prep=bnb.JobPrep("exit 4"))
    job.add_task("never", "true")
    state = {}

    def failed_everywhere():
        state.update(JobModel.from_job(job).state())
        return len(state["prep"]) == 2 and all(p["prep"] == "failed" for p in state["prep"])
    wait_for(failed_everywhere, 30, "the preparation to fail on both nodes")
    assert "preparation task failed on every node (2)" in state["problem"]
    assert {p["exit_code"] for p in state["prep"]} == {4}
    job.terminate()
