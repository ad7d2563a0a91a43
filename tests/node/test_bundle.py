"""A bundle on its own, no Dask: command attempts keep their exit codes, tails, wall clocks and
folders; carried successors run only after their predecessor succeeded, with its result."""

from __future__ import annotations

import os
from pathlib import Path

import cloudpickle

from batchnb.node import bundle, quickrun
from batchnb.node.runner import AttemptRequest, TIMEOUT
from batchnb.node.pycall import TaskRef


def request(tmp_path, task_id, **kw) -> AttemptRequest:
    base = dict(job_id="j", task_id=task_id, attempt=1, pool_id="p", node_root=str(tmp_path / "nodes"))
    base.update(kw)
    return AttemptRequest(**base)


def test_commands_in_a_bundle_record_exit_codes_tails_and_wall_clocks(tmp_path):
    recs = bundle.run_bundle([
        request(tmp_path, "ok", command="echo out; echo err >&2"),
        request(tmp_path, "quiet", command=["/bin/true"]),
        request(tmp_path, "bad", command="echo why >&2; exit 7"),
        request(tmp_path, "slow", command="sleep 30", max_wall_clock=0.5),
        request(tmp_path, "missing", command=["/no/such/program"]),
    ])
    by = {r.task_id: r for r in recs}
    assert [r.task_id for r in recs] == ["ok", "quiet", "bad", "slow", "missing"]
    assert by["ok"].succeeded and by["ok"].stdout_tail == "out\n" and by["ok"].stderr_tail == "err\n"
    assert Path(by["ok"].task_dir, "stdout.txt").read_text() == "out\n"      # it wrote: kept
    assert by["bad"].exit_code == 7 and by["bad"].stderr_tail == "why\n" and by["bad"].message == "exit code 7"
    assert by["slow"].category == TIMEOUT and by["slow"].end - by["slow"].start < 20
    assert by["missing"].exit_code == 127 and not by["missing"].succeeded
    # An attempt that left nothing keeps no folder: its record says so at once, the folder goes soon.
    assert by["quiet"].succeeded and by["quiet"].task_dir is None
    assert quickrun.flush()
    assert not list((tmp_path / "nodes").glob("*/workitems/j/quiet"))
    assert Path(by["bad"].task_dir).is_dir() and Path(by["slow"].task_dir).is_dir()   # failures are kept


def add(x, y=0):
    return x + y


def test_carried_tasks_run_after_a_success_with_its_result_and_not_after_a_failure(tmp_path):
    first = request(tmp_path, "a", python=cloudpickle.dumps((add, (1,), {})))
    then = request(tmp_path, "b", python=cloudpickle.dumps((add, (TaskRef("a"), 10), {})))
    fails = request(tmp_path, "c", command="exit 3")
    never = request(tmp_path, "d", command=f"touch {tmp_path / 'd-ran'}")
    after_never = request(tmp_path, "e", command=f"touch {tmp_path / 'e-ran'}")
    recs = bundle.run_bundle([first, fails], [(then, "a"), (never, "c"), (after_never, "d")])
    assert recs.carried_from == 2
    assert [r.task_id for r in recs] == ["a", "c", "b"]
    assert cloudpickle.loads(recs[2].result) == 11
    assert recs[1].exit_code == 3
    assert not os.path.exists(tmp_path / "d-ran") and not os.path.exists(tmp_path / "e-ran")


def test_a_bundle_travels_as_plain_pickle_or_as_cloudpickle_when_something_in_it_needs_that(tmp_path):
    import pickle
    plain = [request(tmp_path, "a", command=["/bin/true"]), request(tmp_path, "b", command="exit 3")]
    packed = bundle.pack(bundle.run_bundle, (plain,))
    assert pickle.loads(packed)[0] is bundle.run_bundle      # no cloudpickle needed to read it
    assert [(r.task_id, r.exit_code) for r in bundle.run_packed(packed)] == [("a", 0), ("b", 3)]
    # A storage option holding a function made here (a token callback): plain pickle refuses it.
    odd = [request(tmp_path, "c", command=["/bin/true"], storage_options={"az": {"token": lambda: "t"}})]
    recs = bundle.run_packed(bundle.pack(bundle.run_bundle, (odd,)))
    assert [(r.task_id, r.exit_code) for r in recs] == [("c", 0)]
