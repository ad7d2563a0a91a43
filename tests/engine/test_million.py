"""A million tasks on a laptop (issue 17, point 1), on smaller n with the same code paths.

A map is one array spec plus an index per task; ``add_tasks`` reads an iterable in
chunks; the dispatcher holds a bounded window of the tasks that merely wait, paging
them in from the ledger; a resumed job does not run its succeeded tasks again.
Real local pools; nothing is timed.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

import batchnb as bnb
from batchnb.engine import arrays
from batchnb.engine.ledger import Ledger
from pools import temporary_pool
from waiting import wait_for


def noop(x):
    return x


def add(x, y, bias=0):
    return x + y + bias


def held(pool, job_id: str) -> int:
    """How many of the job's tasks the dispatcher holds in memory."""
    disp = pool._dispatcher
    return disp.call(lambda: len(disp.jobs[job_id.lower()].tasks))


@pytest.mark.timeout(1800)     # 8,000 tasks on a loaded 2-core machine; the bound only catches a hang
def test_a_map_of_8000_tasks_runs_each_once_from_one_array_spec():
    with temporary_pool("million-map", dedicated=2) as pool:
        job = pool.job("map8k")
        tasks = job.map(noop, range(8_000))
        assert len(tasks) == 8_000 and tasks[-1].task_id == "noop-7999"
        # One array spec for the whole map; each task row only points into it.
        assert len(pool.ledger.arrays_of("map8k")) == 1
        window = pool._dispatcher.window()
        peak = 0

        def done():
            nonlocal peak
            peak = max(peak, held(pool, "map8k"))
            return job.task_counts().live == 0
        wait_for(done, 3600, "the map to finish")
        counts = job.task_counts()
        assert (counts.succeeded, counts.completed, counts.total) == (8_000, 8_000, 8_000), counts
        rows = job.tasks()
        assert len(rows) == 8_000 and {r.attempts for r in rows} == {1}
        assert job.stats().attempts == 8_000              # no task ran twice
        # The dispatcher held a window of the map's waiting tasks, its running bundles and their
        # outcomes being recorded: a bound of its own (3,600 for two slots), far from the map's 8,000.
        assert peak <= 3 * window, (peak, window)
        assert tasks[5_432].result() == 5_432


def test_a_generator_of_command_specs_is_read_in_chunks_while_tasks_run(monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK", 100)
    with temporary_pool("million-gen", dedicated=2) as pool:
        job = pool.job("gen")
        pulled = []            # (index pulled, tasks in the ledger then)

        def c0_ran() -> bool:
            try:
                return job.task("c0").state == bnb.TaskState.SUCCEEDED
            except KeyError:        # its chunk is still being added while this one is read
                return False

        def specs():
            for i in range(250):
                if i == 150:
                    # Past the first chunk: its tasks are in the ledger and run while this one is read.
                    wait_for(c0_ran, 120, "c0 to run")
                pulled.append((i, job.task_counts().total))
                yield bnb.TaskSpec(f"c{i}", "true")
        tasks = job.add_tasks(specs())
        assert len(tasks) == 250
        seen = dict(pulled)
        # A chunk is added while the next is read: at its first item the one before may be in
        # the ledger or on its way; the chunk before that is always in.
        assert (seen[0], seen[99], seen[199]) == (0, 0, 100)
        assert seen[100] in (0, 100) and seen[200] in (100, 200), seen
        result = job.wait(timeout=600, quiet=True)
        assert result.ok and job.task_counts().succeeded == 250, result


def test_waiting_tasks_the_ready_queue_has_room_for_are_held_from_their_specs_not_read_back(monkeypatch):
    """Added while the ready queue has room, waiting command tasks are held at once; beyond a
    window they wait in the ledger alone and are paged in, read from it, in the order added."""
    from batchnb.engine import taskstore
    read_back = []
    spec_of_row = taskstore.spec_of_row
    monkeypatch.setattr(taskstore, "spec_of_row", lambda *a: read_back.append(a) or spec_of_row(*a))
    with temporary_pool("million-held", dedicated=0) as pool:       # no node: nothing runs
        disp = pool._dispatcher
        window = disp.window()
        job = pool.job("held")
        given = [bnb.TaskSpec(f"t{i}", "true") for i in range(window + 50)]
        job.add_tasks(given)
        first = disp.call(lambda: disp.jobs["held"].tasks.get("t0"))
        assert first is not None and first.spec is given[0]      # the spec given, not one read back
        assert held(pool, "held") == window and read_back == []
        assert disp.call(lambda: disp.jobs["held"].tasks.cold)   # the 50 past the window wait in the ledger
        pool.resize(dedicated=1)
        result = job.wait(timeout=300, quiet=True)
        assert result.ok and job.task_counts().succeeded == window + 50, result
        # Paged in once slots freed room: each read from the ledger once, in the order added.
        assert [json.loads(a[2])["id"] for a in read_back] == [f"t{i}" for i in range(window, window + 50)]


def test_a_bad_spec_mid_stream_names_the_task_and_keeps_the_chunks_before(monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK", 100)
    with temporary_pool("million-bad", dedicated=1) as pool:
        job = pool.job("bad")

        def specs():
            for i in range(300):
                yield {"id": "oops", "command": "true", "required_slots": 0} if i == 250 else \
                    {"id": f"t{i}", "command": "true"}
        with pytest.raises(bnb.SpecError, match="task 'oops'.*required_slots.*200 tasks before"):
            job.add_tasks(specs())
        assert job.task_counts().total == 200
        assert job.task("t199") and pytest.raises(KeyError, job.task, "t200")
        job.terminate()


def test_the_next_chunk_is_read_while_the_one_before_is_written(monkeypatch):
    """The caller's thread reads and checks a chunk while the dispatcher writes the one before
    (the two overlap on two cores): the write of the first chunk is held until the generator has
    given half of the second, which it could not if each chunk were waited for."""
    monkeypatch.setattr(arrays, "CHUNK", 100)
    with temporary_pool("million-overlap", dedicated=0) as pool:
        job = pool.job("overlap")
        reading_second = threading.Event()
        overlapped = []

        def hold_first_write(job_id, rows):
            if rows and rows[0][0] == "c0":
                overlapped.append(reading_second.wait(30))

        pool.ledger.adding_hooks.append(hold_first_write)

        def specs():
            for i in range(250):
                if i == 150:
                    reading_second.set()
                yield bnb.TaskSpec(f"c{i}", "true")
        assert len(job.add_tasks(specs())) == 250
        assert overlapped == [True] and job.task_counts().total == 250
        job.terminate()


def test_a_bad_chunk_being_written_is_reported_before_a_bad_task_read_after_it(monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK", 100)
    with temporary_pool("million-first", dedicated=0) as pool:
        job = pool.job("first")
        job.add_task("t5", "echo already")

        def specs():        # t5 comes again with another command (chunk 1); chunk 2 holds a bad id
            for i in range(200):
                yield {"id": "bad id" if i == 150 else f"t{i}", "command": "true"}
        with pytest.raises(bnb.SpecError, match="t5.*different spec"):
            job.add_tasks(specs())
        assert job.task_counts().total == 1
        job.terminate()


def test_a_map_over_lists_stores_its_arguments_once_in_chunks_and_keeps_ranges(monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK", 1000)
    with temporary_pool("million-args", dedicated=2) as pool:
        job = pool.job("args")
        ys = [10 * i for i in range(2_500)]
        tasks = job.map(add, range(5_000), iter(ys), bias=1)
        assert len(tasks) == 2_500                          # zip's length
        (array_id,) = pool.ledger.arrays_of("args")
        record = json.loads(pool.ledger.array("args", array_id))
        assert record["args"] == [{"range": [0, 5_000, 1]}, {"col": 0}] and len(record["chunks"]) == 3
        specs_text = [r["spec"] for r in pool.ledger.tasks("args", ("spec",))]
        assert {json.loads(s)["array"] for s in specs_text} == {array_id}
        assert max(map(len, specs_text)) < 80               # a reference, not a pickled call
        spec = tasks[1_234].spec                            # made on demand from the array and its index
        assert spec.id == "add-1234" and spec.python.name.endswith("add")
        assert job.wait(timeout=600, quiet=True).ok
        assert [tasks[i].result() for i in (0, 1_234, 2_499)] == [1, 1_234 + 12_340 + 1, 2_499 + 24_990 + 1]
        # A re-run notebook maps the same again: nothing new is added.
        again = bnb.Job(pool, job._run).map(add, range(5_000), iter(ys), bias=1)
        assert [t.task_id for t in again] == [t.task_id for t in tasks] and job.task_counts().total == 2_500


@pytest.mark.timeout(1800)
def test_a_resumed_map_does_not_run_its_succeeded_tasks_again(tmp_path):
    path = tmp_path / "ledger.sqlite"
    gate = tmp_path / "gate"
    first = bnb.Pool("million-resume", dedicated=1, ledger=Ledger(path))
    try:
        job = first.job("resume")
        job.map(_gated, range(2_000), gate=str(gate))
        wait_for(lambda: job.task_counts().succeeded >= 200, 900, "200 tasks to succeed")
    finally:
        first.close()
    led = Ledger(path)
    before = {r["id"] for r in led.tasks("resume", ("id",), states=[bnb.TaskState.SUCCEEDED])}
    assert 200 <= len(before) < 2_000
    Path(gate).touch()
    with bnb.Pool("million-resume", dedicated=2, ledger=Ledger(path)) as again:
        job = again.job("resume")
        # Resumed: it holds a window of the waiting tasks at most, none of the succeeded ones.
        assert held(again, "resume") <= again._dispatcher.window()
        assert job.wait(timeout=1200, quiet=True).ok
        assert job.task_counts().succeeded == 2_000
    ran = Counter((a["task_id"]) for a in led.attempts("resume") if a["state"] == "succeeded")
    assert set(ran) == {f"_gated-{i}" for i in range(2_000)} and set(ran.values()) == {1}
    assert all(len(led.attempts("resume", t)) == 1 for t in sorted(before)[:50])


def _gated(i, gate):
    """The first 1,000 tasks run at once; the others wait for the gate (a resumed pool opens it).
    A bundle of tiny tasks (at most 500) that meets a waiting one reports none of them: the
    first 1,000 leave room for whole bundles to succeed first."""
    import os
    import time
    while i >= 1_000 and not os.path.exists(gate):
        time.sleep(0.05)
    return i


def test_a_maps_arguments_of_builtin_data_pickle_as_cloudpickle_would_and_others_by_value():
    """Plain pickle, ten times cheaper per task, is used only where its bytes are cloudpickle's own
    (a task's args digest must not change with the path: a re-run map must be a no-op); anything
    else, such as a function defined in a notebook or ``__main__``, still travels by value."""
    import cloudpickle

    from batchnb.engine.arrays import _plain, _plain_dumps
    plain = [((1,), {}), (("a", 2.5, None, True, b"x", [1, 2], {"k": (1, -3j)}), {"z": 1}), ((10 ** 30,), {})]
    for value in plain:
        assert _plain(value) and _plain_dumps(value) == cloudpickle.dumps(value), value

    def local(x):
        return x
    for other in [(local,), (Path("a"),), (list(range(100)),), ({(1, 2): 3},), ((((((1,),),),),),)]:
        assert not _plain(other), other
    with temporary_pool("million-pickle", dedicated=1) as pool:
        job = pool.job("pickle")
        tasks = job.map(lambda f, x: f(x), [local, abs], [-4, -5])
        assert [t.result(timeout=120) for t in tasks] == [-4, 5]
