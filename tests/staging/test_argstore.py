"""Large Python arguments go by reference (stored once under the pool's results URL), and a
TaskIdRange stays a range: neither a 50 MB argument nor two million ids reach the ledger,
a spec or a message (issue 12, point 5)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import batchnb as bnb
from batchnb import spec as specs


def _ledger_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _args_files(home: Path) -> list[Path]:
    return sorted((home / "results" / ".args").glob("*.pkl"))


def test_a_50_mb_argument_grows_the_ledger_by_under_1_mb_and_arrives_whole(home):
    big = os.urandom(50 * 2**20)
    with bnb.Pool("bigarg", dedicated=1) as pool:
        path = pool.ledger.path
        job = pool.job("bigarg")
        job.add_task("warm", "true")      # the ledger's tables and first pages exist before the measure
        job.wait(timeout=60, quiet=True)
        before = _ledger_bytes(path)
        t = job.submit(digest, big, task_id="sum")
        result = job.wait(timeout=120, quiet=True)
        grown = _ledger_bytes(path) - before
    assert result.counts.get("succeeded") == 2, result
    assert t.result() == digest(big)            # the exact bytes reached the function
    assert grown < 2**20, f"the ledger grew by {grown} bytes"
    assert len(_args_files(home)) == 1


def test_a_big_constant_of_a_map_is_stored_once(home):
    table = os.urandom(2**20)
    with bnb.Pool("mapconst", dedicated=1) as pool:
        job = pool.job("mapconst")
        tasks = job.map(lambda i, table: (i, digest(table)), range(5), table=table)
        small = job.submit(len, b"x" * 1000)          # stays inline: nothing stored for it
        job.wait(timeout=120, quiet=True)
        results = [t.result() for t in tasks]
        assert small.result() == 1000
    assert results == [(i, digest(table)) for i in range(5)]
    assert len(_args_files(home)) == 1
    assert _args_files(home)[0].stat().st_size > 2**20


def test_a_job_with_a_by_reference_argument_resumes(home):
    big = os.urandom(2 * 2**20)
    # No node: the task waits in the ledger, its argument by reference, until a pool resumes it.
    with bnb.Pool("resume-arg", dedicated=0) as pool:
        job = pool.job("resume-arg")
        job.submit(digest, big, task_id="sum")
        row = pool.ledger.task("resume-arg", "sum")
        assert len(row["spec"]) < 4096
    with bnb.Pool("resume-arg", dedicated=1) as pool:
        job = pool.job("resume-arg")
        result = job.wait(timeout=120, quiet=True)
        assert result.counts.get("succeeded") == 1, result
        assert job.task("sum").result() == digest(big)


def test_a_task_id_range_stays_a_range_in_specs_and_the_ledger(home):
    merge = bnb.TaskSpec("merge", "true", depends_on=bnb.TaskIdRange(1, 2_000_000))
    assert len(merge.depends_on) == 2_000_000 and "1999999" in merge.depends_on
    text = specs.dumps(bnb.JobSpec("big", tasks=(merge,)))
    assert len(text) < 1024
    again = specs.loads(text).tasks[0]
    assert again == merge and len(specs.dumps(bnb.JobSpec("big", tasks=(again,)), "json")) < 1024
    assert len(repr(merge)) < 1024


def test_a_bad_dependency_on_a_huge_range_is_a_short_error(home):
    with bnb.Pool("rangeerr", dedicated=0) as pool:
        job = pool.job("rangeerr")
        with pytest.raises(bnb.SpecError) as err:
            job.add_task("merge", "true", depends_on=bnb.TaskIdRange(1, 2_000_000))
    message = str(err.value)
    assert len(message) < 1024, len(message)
    assert "'merge'" in message and "1999995 more" in message


def test_dependencies_on_a_range_run_after_it_and_the_ledger_keeps_the_range(home):
    with bnb.Pool("rangedeps", dedicated=1, task_slots_per_node=2) as pool:
        job = pool.job("rangedeps")
        job.add_tasks([bnb.TaskSpec(str(i), "true") for i in range(1, 201)])
        merge = job.add_task("merge", "true", depends_on=[bnb.TaskIdRange(1, 200)])
        result = job.wait(timeout=120, quiet=True)
        assert result.counts.get("succeeded") == 201, result
        ends = {r["id"]: r["ended"] for r in pool.ledger.tasks("rangedeps", ("id", "ended"))}
        assert ends["merge"] >= max(v for k, v in ends.items() if k != "merge")
        stored = pool.ledger.task("rangedeps", "merge")["spec"]
    assert '"depends_on": [{"start": 1, "end": 200}]' in stored
    assert merge.state == "succeeded"


def test_huge_values_in_error_messages_are_cut():
    err = bnb.SpecError("depends_on", list(range(1_000_000)), "x" * 100_000)
    assert len(str(err)) < 2000 and "chars)" in str(err)
    assert len(str(bnb.LedgerError("y" * 10_000_000))) < 5000


def test_a_stored_argument_is_checked_when_read_and_read_once_per_worker(tmp_path):
    import cloudpickle
    from batchnb.staging import argstore
    base = tmp_path.as_uri()
    ref = argstore.store(cloudpickle.dumps(b"a" * 100_000), base, {})
    again = argstore.store(cloudpickle.dumps(b"a" * 100_000), base, {})      # the same content: one file
    assert (ref.url, ref.digest) == (again.url, again.digest) and len(list((tmp_path / ".args").iterdir())) == 1
    assert argstore.fetch(ref, {}) == b"a" * 100_000
    Path(ref.url[len("file://"):]).unlink()           # read once per worker: the next task needs no file
    assert argstore.fetch(ref, {}) == b"a" * 100_000
    changed = argstore.store(cloudpickle.dumps(b"b" * 100_000), base, {})
    path = Path(changed.url[len("file://"):])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(bnb.StagingError, match="was changed since it was stored"):
        argstore.fetch(changed, {})


def _count(items):
    return len(items)


def test_a_python_task_on_a_range_keeps_the_range_beside_the_tasks_it_is_given(home):
    with bnb.Pool("rangepy", dedicated=1, task_slots_per_node=2) as pool:
        job = pool.job("rangepy")
        job.add_tasks([bnb.TaskSpec(str(i), "true") for i in range(1, 51)])
        extra = job.add_task("extra", "true")
        total = job.submit(_count, [extra], task_id="total", depends_on=bnb.TaskIdRange(1, 50))
        assert job.wait(timeout=120, quiet=True).ok
        stored = pool.ledger.task("rangepy", "total")["spec"]
    assert '"depends_on": [{"start": 1, "end": 50}, "extra"]' in stored
    assert total.result() == 1
