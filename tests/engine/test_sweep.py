"""``job.sweep``: a command template over ranges stored as one array spec (Azure Batch's
parametric sweep task factory). Real local pools running real commands."""

from __future__ import annotations

import json

import pytest

import batchnb as bnb
from batchnb.engine import arrays
from pools import temporary_pool


def test_a_sweep_is_one_array_spec_and_each_task_runs_its_own_command(monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK", 500)
    with temporary_pool("sweep-run", dedicated=2) as pool:
        job = pool.job("sweep")
        tasks = job.sweep("echo frame {0:04d} tile {1}", range(0, 1200, 2), range(3), id="frame-{0}-{1}",
                          retry=bnb.Retry(max=1), env={"K": "v"})
        assert isinstance(tasks, bnb.TaskList) and len(tasks) == 1800
        assert tasks[5].task_id == "frame-2-2" and tasks[-1].task_id == "frame-1198-2"
        assert tasks.task_ids.runs == 600       # the last number varies fastest: runs of three
        (array_id,) = pool.ledger.arrays_of("sweep")
        record = json.loads(pool.ledger.array("sweep", array_id))
        assert record["kind"] == "command" and record["args"] == [{"range": [0, 1200, 2]}, {"range": [0, 3, 1]}]
        texts = [r["spec"] for r in pool.ledger.tasks("sweep", ("spec",))]
        assert len(texts) == 1800 and {json.loads(t)["array"] for t in texts} == {array_id}
        assert max(map(len, texts)) < 120               # a reference, not a spec
        spec = tasks[5].spec                            # made on demand from the template and its index
        assert (spec.id, spec.command, spec.retry.max, dict(spec.env)) == (
            "frame-2-2", "echo frame 0002 tile 2", 1, {"K": "v"})
        assert job.wait(timeout=900, quiet=True).ok
        assert job.task_counts().succeeded == 1800
        assert tasks[5].stdout().strip() == "frame 0002 tile 2"
        assert tasks[-1].stdout().strip() == "frame 1198 tile 2"
        info = job.tasks()[5]
        assert info.command == "echo frame {0:04d} tile {1} (sweep task 5)"
        # The same sweep again (a re-run notebook) adds nothing; a task added by hand is compared.
        again = job.sweep("echo frame {0:04d} tile {1}", range(0, 1200, 2), range(3), id="frame-{0}-{1}",
                          retry=bnb.Retry(max=1), env={"K": "v"})
        assert len(again) == 1800 and job.task_counts().total == 1800


def test_a_single_range_sweep_names_its_tasks_as_one_run():
    with temporary_pool("sweep-ids", dedicated=1) as pool:
        job = pool.job("ids")
        tasks = job.sweep("true {0}", range(100_000, 100_050))
        assert tasks.task_ids.runs == 1 and tasks[0].task_id == "sweep-100000"
        assert job.wait(timeout=300, quiet=True).ok and job.task_counts().succeeded == 50


BAD = [
    (lambda j: j.sweep("echo {1}", range(3)), "command", r"placeholder \{1\}.*1 range: use \{0\}"),
    (lambda j: j.sweep("echo {name}", range(3)), "command", "placeholders are numbered"),
    (lambda j: j.sweep("echo {0", range(3)), "command", "not a valid template"),
    (lambda j: j.sweep("", range(3)), "command", "non-empty"),
    (lambda j: j.sweep("echo {0}", [1, 2, 3]), "ranges[0]", "expected a range"),
    (lambda j: j.sweep("echo {0}"), "ranges", "at least one range"),
    (lambda j: j.sweep("echo {0} {1}", range(3), range(2), id="t{0}"), "id", r"leaves out placeholder \{1\}"),
    (lambda j: j.sweep("echo {0}", range(3), id="bad id {0}!"), "id", "makes task id 'bad id 0!'"),
    (lambda j: j.sweep("echo {0:q}", range(3)), "command", "cannot be formatted"),
    (lambda j: j.sweep("echo {0}", range(3), id="t{0:q}"), "id", "cannot be formatted"),
    (lambda j: j.sweep("echo {0}", range(3), max_task_retry=2), "max_task_retry", "not a keyword"),
    (lambda j: j.sweep("echo {0}", range(3), depends_on=["x"]), "depends_on", "not a sweep's option"),
]


def test_a_bad_sweep_is_refused_at_the_call_naming_the_field():
    with temporary_pool("sweep-bad", dedicated=1) as pool:
        job = pool.job("bad")
        for call, field, match in BAD:
            with pytest.raises(bnb.SpecError, match=match) as err:
                call(job)
            assert err.value.field == field, (field, err.value)
        assert job.task_counts().total == 0 and pool.ledger.arrays_of("bad") == []


def test_a_resumed_sweep_does_not_run_its_succeeded_tasks_again(tmp_path):
    from collections import Counter

    from batchnb.engine.ledger import Ledger
    from waiting import wait_for
    path = tmp_path / "ledger.sqlite"
    first = bnb.Pool("sweep-resume", dedicated=1, ledger=Ledger(path))
    try:
        job = first.job("resume")
        job.sweep("true {0}", range(600), id="r{0}")
        wait_for(lambda: job.task_counts().succeeded >= 50, 600, "50 tasks to succeed")
    finally:
        first.close()
    led = Ledger(path)
    before = {r["id"] for r in led.tasks("resume", ("id",), states=[bnb.TaskState.SUCCEEDED])}
    assert 50 <= len(before) < 600
    with bnb.Pool("sweep-resume", dedicated=2, ledger=Ledger(path)) as again:
        job = again.job("resume")
        assert job.wait(timeout=900, quiet=True).ok and job.task_counts().succeeded == 600
    ran = Counter(a["task_id"] for a in led.attempts("resume") if a["state"] == "succeeded")
    assert set(ran) == {f"r{i}" for i in range(600)} and set(ran.values()) == {1}
