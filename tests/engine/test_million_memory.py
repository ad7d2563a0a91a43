"""What a million-task job costs the driver (issue 17, point 1): nothing per completed task.

The driver's Python objects are counted by type after one map completes and again after a
second map of the same size: what the second adds is what a task leaves behind. A real
local pool (its Dask scheduler runs in this process, as in a notebook); nothing is timed.
"""

from __future__ import annotations

import gc
from collections import Counter

import pytest

import batchnb as bnb
from pools import temporary_pool

N = 3_000
# The objects a task used to leave in the driver: its attempt request (kept by Dask's debug log of
# recent stream messages, a bundle of up to 500 per message), its handle (the list job.map
# returned), its TaskRun and spec (the dispatcher's table), its attempt record.
TYPES = ("AttemptRequest", "AttemptRecord", "Task", "TaskRun", "TaskSpec", "PythonCall")


def noop(x):
    return x


def held() -> Counter:
    """The objects of TYPES alive now, besides those in Dask's debug logs of recent stream messages.

    Those logs are bounded (the pool cuts each to MESSAGE_LOG messages, checked here) but a
    message carries a whole bundle, and bundles are smaller on a loaded machine: the same 20
    messages hold tens or thousands of requests, so they are emptied before counting."""
    from distributed.batched import BatchedSend

    from batchnb.engine.taskstore import MESSAGE_LOG
    gc.collect()
    sends = [o for o in gc.get_objects() if isinstance(o, BatchedSend)]
    # The pool's own streams are open; a closed one may be left from an earlier test in this
    # process (an in-process worker made with Dask's defaults), and is only emptied.
    live = [o.recent_message_log for o in sends if o.comm is not None and not o.comm.closed()]
    assert live and all(log.maxlen == MESSAGE_LOG for log in live), [log.maxlen for log in live]
    for o in sends:
        o.recent_message_log.clear()
    gc.collect()
    return Counter(name for o in gc.get_objects() if (name := type(o).__name__) in TYPES)


@pytest.mark.timeout(900)     # the bound only catches a hang
def test_completed_tasks_leave_nothing_per_task_in_the_driver():
    with temporary_pool("million-memory", dedicated=2) as pool:
        job = pool.job("mem")
        first = job.map(noop, range(N))
        assert job.wait(timeout=600, quiet=True).ok
        before = held()
        second = job.map(noop, range(N))
        assert job.wait(timeout=600, quiet=True).ok
        after = held()
        grown = {t: after[t] - before[t] for t in TYPES}
        # A bounded window (tasks held while they run, a few recent messages) may differ between
        # the two counts; a task's own object would add N.
        assert all(g < N // 10 for g in grown.values()), (grown, before, after)
        # Both lists are alive and whole: handles made when asked for.
        assert (len(first), len(second), second[0].task_id, first[-1].task_id) == (N, N, f"noop-{N}", f"noop-{N - 1}")
        assert job.task_counts().succeeded == 2 * N


def test_the_task_list_behaves_as_a_list_of_handles():
    with temporary_pool("million-list", dedicated=1) as pool:
        job = pool.job("tl")
        tasks = job.map(noop, range(10))
        assert isinstance(tasks, bnb.TaskList) and len(tasks) == 10
        assert [t.task_id for t in tasks] == [f"noop-{i}" for i in range(10)]
        assert [t.task_id for t in tasks[2:8:3]] == ["noop-2", "noop-5"] and tasks[-1].task_id == "noop-9"
        assert tasks.index(tasks[4]) == 4 and tasks[4] in tasks and job.task("noop-4") in tasks
        with pytest.raises(IndexError):
            tasks[10]
        assert len(tasks + [tasks[0]]) == 11
        shown = repr(tasks)
        assert shown.startswith("[<batchnb.Task tl/noop-0 ") and "... 6 more ..." in shown \
            and "(10 tasks of job 'tl')" in shown and repr(tasks[:2]).count("<batchnb.Task") == 2
        # In a call's arguments, inside a list too, its tasks are dependencies replaced by results.
        total = job.submit(sum, tasks)
        nested = job.submit(lambda d: sum(d["xs"][0]), {"xs": [tasks[:3]]})
        assert total.result(timeout=300) == 45 and nested.result(timeout=300) == 3
        added = job.add_tasks(bnb.TaskSpec(f"c{i}", "true") for i in (1, 2, 3, 7))
        assert [t.task_id for t in added] == ["c1", "c2", "c3", "c7"] and added.task_ids.runs == 2
