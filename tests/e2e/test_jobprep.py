"""Job preparation and release tasks on a real local pool of two one-slot nodes.

The preparation and release commands append a line to a side file, so the
tests count how often and where each ran, and in what order with the job's
tasks, from what the nodes did rather than from what the ledger says.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dask.config
import pytest

import batchnb as bnb
from batchnb.spec.options import job_options
from waiting import wait_for

WAIT = 60  # seconds: a bound on every wait; the tests take a fraction of it


def _log(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _prep(side: Path, **kw) -> bnb.JobPrep:
    return bnb.JobPrep(f"echo prep $AZ_BATCH_NODE_ID >> {side}; echo ready > flag", **kw)


def _release(side: Path) -> bnb.JobRelease:
    return bnb.JobRelease(f"echo release $AZ_BATCH_NODE_ID $AZ_BATCH_JOB_PREP_DIR >> {side}")


def test_prep_runs_once_per_node_before_the_jobs_tasks_and_release_at_job_end(pool2, unique, tmp_path):
    side = tmp_path / "side.log"
    job = pool2.job(unique, prep=_prep(side), release=_release(side), on_all_tasks_complete="terminate")
    tasks = [job.add_task(f"t{i}", f"echo task $AZ_BATCH_NODE_ID >> {side}; "
                                   "cat $AZ_BATCH_JOB_PREP_WORKING_DIR/flag; echo $AZ_BATCH_JOB_PREP_DIR")
             for i in range(8)]
    result = job.wait(timeout=WAIT, quiet=True)
    assert result.reason == "all_tasks_complete" and result.counts == {"succeeded": 8}
    lines = _log(side)
    preps = [node for kind, node, *_ in lines if kind == "prep"]
    assert sorted(preps) == ["dedicated-0", "dedicated-1"]          # once on each node
    for node in preps:      # before every task of the job there
        mine = [kind for kind, n, *_ in lines if n == node]
        assert mine[0] == "prep" and mine.count("prep") == 1 and "task" in mine, lines
    for t in tasks:
        ready, prep_dir = t.stdout().split()
        assert ready == "ready"
        assert prep_dir.endswith(f"/{t.info().node}/workitems/{unique}/job-1/jobpreparation")
    # job.wait() returned once the release tasks ended: one on each node that prepared, after its tasks.
    releases = [(n, d) for kind, n, *d in lines if kind == "release"]
    assert sorted(n for n, _ in releases) == sorted(preps)
    assert all(d[0].endswith(f"/{n}/workitems/{unique}/job-1/jobpreparation") for n, d in releases)
    assert [kind for kind, *_ in lines[-2:]] == ["release", "release"]
    runs = job.prep_runs()
    assert sorted((r.node_id, r.state, r.exit_code, len(r.attempts)) for r in runs) == [
        ("dedicated-0", "succeeded", 0, 1), ("dedicated-1", "succeeded", 0, 1)]
    assert sorted((r.node_id, r.state) for r in job.release_runs()) == [
        ("dedicated-0", "succeeded"), ("dedicated-1", "succeeded")]
    # The job keeps them in the ledger: a re-attach (and Job.attach's recorded options) gets them back.
    assert pool2.job(unique)._run.spec.prep == _prep(side)
    recorded = json.loads(pool2.ledger.job(unique)["spec"])
    assert bnb.JobSpec(unique, **job_options({k: v for k, v in recorded.items() if k != "id"})) == job._run.spec


def test_release_runs_on_each_prepared_node_after_terminate(pool2, unique, tmp_path):
    side = tmp_path / "side.log"
    job = pool2.job(unique, prep=_prep(side), release=_release(side))
    for i in range(2):
        job.add_task(f"sleep{i}", f"echo task $AZ_BATCH_NODE_ID >> {side}; exec sleep 60")
    wait_for(lambda: job.counts()["running"] == 2, WAIT, "both tasks to run")
    t0 = time.time()
    job.terminate()
    result = job.wait(timeout=WAIT, quiet=True)
    assert result.reason == "terminated" and time.time() - t0 < 30
    lines = _log(side)
    assert sorted(n for kind, n, *_ in lines if kind == "release") == ["dedicated-0", "dedicated-1"]
    assert sorted((r.node_id, r.state) for r in job.release_runs()) == [
        ("dedicated-0", "succeeded"), ("dedicated-1", "succeeded")]


def test_a_failed_prep_with_wait_for_success_keeps_the_jobs_tasks_off_its_node(pool2, unique, tmp_path):
    side = tmp_path / "side.log"
    (tmp_path / "fail-dedicated-1").touch()          # the preparation fails there, and only there
    prep = bnb.JobPrep(f"echo prep $AZ_BATCH_NODE_ID >> {side}; "
                       f"if [ -e {tmp_path}/fail-$AZ_BATCH_NODE_ID ]; then echo no way >&2; exit 3; fi",
                       retry=bnb.Retry(max=1))
    job = pool2.job(unique, prep=prep, release=_release(side), on_all_tasks_complete="terminate")
    tasks = [job.add_task(f"t{i}", "echo $AZ_BATCH_NODE_ID") for i in range(6)]
    result = job.wait(timeout=WAIT, quiet=True)
    assert result.counts == {"succeeded": 6}
    assert {t.info().node for t in tasks} == {"dedicated-0"}
    runs = {r.node_id: r for r in job.prep_runs()}
    assert runs["dedicated-1"].state == "failed" and runs["dedicated-1"].exit_code == 3
    assert len(runs["dedicated-1"].attempts) == 2 and runs["dedicated-1"].stderr == "no way\n"   # retried once
    assert "exit code 3 after 2 attempt(s)" in runs["dedicated-1"].message
    assert (runs["dedicated-0"].state, len(runs["dedicated-0"].attempts)) == ("succeeded", 1)
    # Azure's release runs where the preparation ran, whether it succeeded or not.
    assert sorted(n for kind, n, *_ in _log(side) if kind == "release") == ["dedicated-0", "dedicated-1"]


def test_a_prep_failing_on_every_node_is_said_not_waited_for(pool2, unique, tmp_path):
    for node in ("dedicated-0", "dedicated-1"):
        (tmp_path / f"fail-{node}").touch()
    prep = bnb.JobPrep(f"if [ -e {tmp_path}/fail-$AZ_BATCH_NODE_ID ]; then exit 5; fi")
    job = pool2.job(unique, prep=prep)
    job.add_task("t0", "true")
    with dask.config.set({"batchnb.stall-grace": "0.5s"}):
        with pytest.raises(bnb.PoolStalled, match=r"preparation task of job .* failed on every node .*"
                                                  r"dedicated-\d: exit code 5 after 1 attempt"):
            job.wait(timeout=WAIT, quiet=True)
    assert job.counts()["active"] == 1                   # not failed behind the user's back
    assert sorted((r.node_id, r.state) for r in job.prep_runs()) == [
        ("dedicated-0", "failed"), ("dedicated-1", "failed")]
    job.terminate()


def test_without_wait_for_success_tasks_run_where_the_prep_failed(pool2, unique, tmp_path):
    prep = bnb.JobPrep("exit 1", wait_for_success=False)
    job = pool2.job(unique, prep=prep, on_all_tasks_complete="terminate")
    for i in range(4):
        job.add_task(f"t{i}", "true")
    assert job.wait(timeout=WAIT, quiet=True).counts == {"succeeded": 4}
    assert {r.state for r in job.prep_runs()} <= {"failed"} and job.prep_runs()


def test_closing_the_pool_releases_the_nodes_of_a_job_still_active(unique, tmp_path):
    from pools import temporary_pool
    side = tmp_path / "side.log"
    with temporary_pool("prep-close", dedicated=1) as pool:
        job = pool.job(unique, prep=_prep(side), release=_release(side))     # noaction: stays active
        job.add_task("a", "true")
        assert job.wait(timeout=WAIT, quiet=True).counts == {"succeeded": 1}
        assert not [line for line in _log(side) if line[0] == "release"]
    assert [line[:2] for line in _log(side)] == [["prep", "dedicated-0"], ["release", "dedicated-0"]]


@pytest.mark.parametrize("rerun", [True, False])
def test_a_node_back_from_preemption_is_prepared_again_unless_told_not(unique, tmp_path, rerun):
    from pools import temporary_pool
    side = tmp_path / "side.log"
    with dask.config.set({"batchnb.preempt-return-after": "0.5s"}), \
            temporary_pool("prep-spot", dedicated=0, spot=1) as pool:
        job = pool.job(unique, prep=_prep(side, rerun_on_node_reboot=rerun))
        first = job.add_task("a", "true")
        wait_for(lambda: first.state == "succeeded", WAIT, "the first task")
        pool.preempt("spot-0")
        wait_for(lambda: [n.state for n in pool.nodes()] == ["preempted"], WAIT, "the preemption")
        wait_for(lambda: [n.state for n in pool.nodes()] == ["idle"], WAIT, "the node to come back")
        second = job.add_task("b", "cat $AZ_BATCH_JOB_PREP_WORKING_DIR/flag")
        wait_for(lambda: second.state == "succeeded", WAIT, "the second task")
    assert [kind for kind, *_ in _log(side)] == ["prep"] * (2 if rerun else 1)
    assert second.stdout() == "ready\n"


def test_a_job_its_prep_holds_up_goes_on_when_a_node_that_can_prepare_joins(unique, tmp_path):
    from pools import temporary_pool
    (tmp_path / "fail-dedicated-0").touch()
    # Slow where it succeeds: a node still preparing must not count as "no node can run them".
    prep = bnb.JobPrep(f"if [ -e {tmp_path}/fail-$AZ_BATCH_NODE_ID ]; then exit 5; fi; sleep 2")
    with dask.config.set({"batchnb.stall-grace": "0.5s"}), \
            temporary_pool("prep-grow", dedicated=1) as pool:
        job = pool.job(unique, prep=prep, on_all_tasks_complete="terminate")
        t = job.add_task("t0", "echo $AZ_BATCH_NODE_ID")
        with pytest.raises(bnb.PoolStalled, match="dedicated-0: exit code 5"):
            job.wait(timeout=WAIT, quiet=True)
        pool.resize(dedicated=2)
        # The dispatcher hears of the new node in its next turn (a wait at that very moment may
        # still see the old picture, as with a stalled pool).
        wait_for(lambda: job._run.key not in pool._dispatcher.preps.blocked, WAIT, "the job to be unblocked")
        # ... as soon as the node is asked for, not once it has prepared: wait() must not give up meanwhile.
        assert not [r for r in job.prep_runs() if r.node_id == "dedicated-1" and r.state == "succeeded"]
        assert job.wait(timeout=WAIT, quiet=True).counts == {"succeeded": 1}
        assert t.stdout() == "dedicated-1\n"
