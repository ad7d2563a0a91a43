"""The runner on its own: one attempt, no Dask (the worker part is exercised in test_dispatch)."""

from __future__ import annotations

import os
import time

import cloudpickle
import pytest

from batchnb.node import runner
from batchnb.node.runner import AttemptRequest
from processes import alive


def request(tmp_path, **kw) -> AttemptRequest:
    base = dict(job_id="j", task_id="t", attempt=1, pool_id="p", node_root=str(tmp_path / "nodes"))
    base.update(kw)
    return AttemptRequest(**base)


def test_shell_command_runs_in_its_own_working_dir_with_azure_variables(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command='echo "$AZ_BATCH_TASK_ID $AZ_BATCH_JOB_ID"; pwd; '
                                                      'echo "$AZ_BATCH_TASK_WORKING_DIR"; echo "$MINE"',
                                     env={"MINE": "here"}))
    assert rec.succeeded and rec.exit_code == 0
    lines = rec.stdout_tail.splitlines()
    assert lines[0] == "t j"
    assert lines[1] == lines[2] == os.path.join(rec.task_dir, "wd")
    assert lines[3] == "here"
    assert rec.task_dir.endswith(os.path.join("workitems", "j", "t", "1"))
    assert open(os.path.join(rec.task_dir, "stdout.txt")).read().startswith("t j")


def test_every_azure_variable_is_set(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command="env | grep ^AZ_BATCH_ | sort"))
    names = {line.split("=", 1)[0] for line in rec.stdout_tail.splitlines()}
    for name in ("AZ_BATCH_TASK_WORKING_DIR", "AZ_BATCH_TASK_ID", "AZ_BATCH_JOB_ID", "AZ_BATCH_NODE_ID",
                 "AZ_BATCH_NODE_SHARED_DIR", "AZ_BATCH_TASK_DIR", "AZ_BATCH_POOL_ID", "AZ_BATCH_NODE_ROOT_DIR",
                 "AZ_BATCH_ACCOUNT_NAME"):   # the multi-instance ones: tests/node/test_multiinstance.py
        assert name in names


def test_argv_is_not_run_by_a_shell(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command=("echo", "$HOME", "a;b")))
    assert rec.stdout_tail.strip() == "$HOME a;b"


def test_nonzero_exit_is_a_failure_with_code_and_stderr(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command="echo oops >&2; exit 7"))
    assert not rec.succeeded
    assert (rec.exit_code, rec.category) == (7, runner.EXIT_CODE)
    assert rec.stderr_tail.strip() == "oops"


def test_missing_program_is_exit_127_not_a_crash(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command=("/no/such/program",)))
    assert rec.exit_code == 127 and rec.category == runner.EXIT_CODE


def test_wall_clock_kills_a_tree_that_ignores_sigterm(tmp_path):
    # The shell ignores TERM, starts a child that ignores TERM and a grandchild
    # that leaves the process group; all three must be dead after the limit.
    pids = tmp_path / "pids"
    cmd = (f"trap '' TERM; echo $$ >> {pids}; "
           f"sh -c 'trap \"\" TERM; echo $$ >> {pids}; sleep 60' & "
           f"setsid sh -c 'echo $$ >> {pids}; sleep 60' & wait")
    t0 = time.monotonic()
    rec = runner.run_attempt(request(tmp_path, command=cmd, max_wall_clock=1.0))
    took = time.monotonic() - t0
    assert rec.category == runner.TIMEOUT and rec.exit_code is None
    assert 1.0 <= took < 15
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 3
    survivors = [p for p in found if alive(p)]
    assert survivors == []


def test_python_call_inline_keeps_result_and_prints(tmp_path):
    def f(a, b):
        print("adding", a, b)
        return a + b
    rec = runner.run_attempt(request(tmp_path, python=cloudpickle.dumps((f, (2, 3), {}))))
    assert rec.succeeded
    assert cloudpickle.loads(rec.result) == 5
    assert rec.stdout_tail == "adding 2 3\n"


def test_python_exception_is_the_tasks_failure(tmp_path):
    def f():
        raise KeyError("nope")
    rec = runner.run_attempt(request(tmp_path, python=cloudpickle.dumps((f, (), {}))))
    assert rec.category == runner.PYTHON and "KeyError" in rec.message
    assert "Traceback" in rec.stderr_tail


def test_python_call_with_wall_clock_runs_in_a_killable_process(tmp_path):
    def slow():
        import time as t
        t.sleep(60)
    t0 = time.monotonic()
    rec = runner.run_attempt(request(tmp_path, python=cloudpickle.dumps((slow, (), {})), max_wall_clock=1.5))
    assert rec.category == runner.TIMEOUT
    assert time.monotonic() - t0 < 15

    def quick(x):
        import os as o
        return x * 2, o.environ["AZ_BATCH_TASK_ID"]
    rec = runner.run_attempt(request(tmp_path, attempt=2, python=cloudpickle.dumps((quick, (21,), {})),
                                     max_wall_clock=30))
    assert rec.succeeded and cloudpickle.loads(rec.result) == (42, "t")


def test_dependency_results_replace_task_refs(tmp_path):
    from batchnb.node.pycall import TaskRef
    payload = cloudpickle.dumps((sum, ([TaskRef("A"), TaskRef("b")],), {}))
    rec = runner.run_attempt(request(tmp_path, python=payload,
                                     dep_results={"a": cloudpickle.dumps(4), "B": cloudpickle.dumps(5)}))
    assert cloudpickle.loads(rec.result) == 9


def test_large_result_goes_to_the_result_url(tmp_path):
    url = (tmp_path / "results" / "r.pkl").as_uri()
    rec = runner.run_attempt(request(tmp_path, python=cloudpickle.dumps((bytes, (2000,), {})),
                                     result_inline_max=100, result_url=url))
    assert rec.result is None and rec.result_url == url
    assert cloudpickle.loads((tmp_path / "results" / "r.pkl").read_bytes()) == bytes(2000)


def test_runner_failure_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_run", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    rec = runner.run_attempt(request(tmp_path, command="true"))
    assert rec.category == runner.CRASH and "boom" in rec.message


@pytest.mark.parametrize("bad", [None, 5])
def test_kill_attempts_unknown_keys_is_harmless(bad):
    assert runner.kill_attempts([("j", "t", bad)]) == 0


def test_python_tasks_see_their_context_inline_and_in_a_process(tmp_path):
    def where():
        import batchnb as bnb
        ctx = bnb.current_task()
        ctx.working_dir.mkdir(parents=True, exist_ok=True)
        (ctx.working_dir / "out.txt").write_text(ctx.task_id)
        return ctx.job_id, ctx.task_id, ctx.attempt, ctx["AZ_BATCH_TASK_ID"], str(ctx.working_dir)
    for attempt, limit in ((1, None), (2, 30)):
        rec = runner.run_attempt(request(tmp_path, attempt=attempt, python=cloudpickle.dumps((where, (), {})),
                                         max_wall_clock=limit))
        job, task, n, env_id, wd = cloudpickle.loads(rec.result)
        assert (job, task, n, env_id) == ("j", "t", attempt, "t")
        assert wd.endswith(os.path.join("t", str(attempt), "wd"))
        assert open(os.path.join(wd, "out.txt")).read() == "t"
    import batchnb as bnb
    assert bnb.current_task() is None


def test_a_kill_that_arrives_before_the_process_still_kills_it(tmp_path):
    runner.kill_attempts([("j", "t", 1)])      # terminate() got here first
    t0 = time.monotonic()
    rec = runner.run_attempt(request(tmp_path, command="sleep 30"))
    assert rec.category == runner.TERMINATED and time.monotonic() - t0 < 5
    rec = runner.run_attempt(request(tmp_path, attempt=2, command="true"))  # other attempts are unaffected
    assert rec.succeeded


# -- issue 11: a terminated Python task running inline (in a worker thread) stops --

def _in_thread(fn):
    """Run ``fn`` on a thread of its own, as a Dask worker runs an attempt; its outcome in a list."""
    import threading
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_an_inline_python_loop_is_stopped_by_a_kill_before_its_side_effect(tmp_path):
    from waiting import wait_for
    started, done = tmp_path / "started", tmp_path / "done"

    def spin(started, done):
        import time as t
        from pathlib import Path
        Path(started).touch()
        end = t.monotonic() + 4
        while t.monotonic() < end:
            pass
        Path(done).write_text("x")
    key = ("kill-loop", "t", 1)
    thread, out = _in_thread(lambda: runner.run_attempt(request(
        tmp_path, job_id=key[0], python=cloudpickle.dumps((spin, (str(started), str(done)), {})))))
    wait_for(started.exists, 30, "the task to start")
    t0 = time.monotonic()
    assert runner.stop_attempts([key], grace=2.0) == []       # nothing left to restart the worker for
    assert time.monotonic() - t0 < 1.5
    thread.join(5)
    assert not thread.is_alive()
    rec = out[0]
    assert rec.category == runner.TERMINATED and "SystemExit" in rec.stderr_tail
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))        # past the loop's end: it never got there
    assert not done.exists()
    assert key not in runner._running


def test_a_thread_blocked_in_c_is_reported_and_never_reaches_its_side_effect(tmp_path):
    from waiting import wait_for
    started, done = tmp_path / "started", tmp_path / "done"
    # Blocked in a C call (a read of a pipe) until the test writes to it: a sleep of a fixed length
    # could end before the stop on a loaded machine (CI saw it end within the 0.3 s grace's wait).
    read_end, write_end = os.pipe()

    def nap(started, done, fd):
        import os as o
        from pathlib import Path
        Path(started).touch()
        o.read(fd, 1)               # no exception reaches a thread inside a C call
        Path(done).write_text("x")
    key = ("kill-sleep", "t", 1)
    try:
        thread, out = _in_thread(lambda: runner.run_attempt(request(
            tmp_path, job_id=key[0], python=cloudpickle.dumps((nap, (str(started), str(done), read_end), {})))))
        wait_for(started.exists, 30, "the task to start")
        # Inside the read, not between the touch and the read (where the stop would land at once:
        # CI saw that under load). The kernel names what a thread waits in.
        wchan = f"/proc/self/task/{thread.native_id}/wchan"
        wait_for(lambda: "pipe_read" in open(wchan).read(), 30, "the task to block in its read")
        assert runner.stop_attempts([key], grace=0.3) == [key]     # stuck: the driver restarts its worker
        os.write(write_end, b"x")   # the call returns: the exception lands before the next line
        thread.join(10)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert out[0].category == runner.TERMINATED
    assert not done.exists()        # the exception waited for the read to return, then landed


def test_a_kill_racing_the_end_of_a_call_never_lands_in_later_code(tmp_path):
    """Kills sent just as short calls end: each ends killed or done, and no exception is left
    pending for the thread's next code (the worker's own, or the next task's)."""
    import random
    import threading
    rng = random.Random(11)

    def short(n):
        total = 0
        for i in range(n):      # up to a few ms of Python code for a kill to land in
            total += i
        return total
    records, current, stop = [], {}, threading.Event()

    def runs():
        for i in range(300):
            current["key"] = ("race", f"t{i}", 1)
            records.append(runner.run_attempt(request(tmp_path, job_id="race", task_id=f"t{i}",
                                                      python=cloudpickle.dumps((short, (rng.randrange(50_000),), {})))))
        stop.set()
        end = time.monotonic() + 0.3    # the thread's own code after the last attempt
        while time.monotonic() < end:
            pass
        return "clean"
    thread, out = _in_thread(runs)
    while not stop.is_set():
        if "key" in current:
            runner.kill_attempts([current["key"]])
        time.sleep(rng.uniform(0, 0.002))
    thread.join(30)
    assert out == ["clean"]
    assert len(records) == 300
    assert all(r.succeeded or r.category == runner.TERMINATED for r in records)
    assert any(r.category == runner.TERMINATED and "SystemExit" in r.stderr_tail for r in records)
    assert not any(k[0] == "race" for k in runner._running)


def test_a_process_that_starts_while_its_worker_closes_is_killed_at_once(tmp_path):
    # The race of a resize: the worker's reaper ran kill_all, then the attempt's thread started its
    # process. It must not outlive the node (it would finish a task already requeued elsewhere).
    from distributed import Client, LocalCluster, get_worker
    from distributed.core import Status
    mark = tmp_path / "ran"

    def attempt_on_a_closing_worker():
        get_worker().status = Status.closing_gracefully       # what retire_workers sets first
        return runner.run_attempt(request(tmp_path, command=f"sleep 1; touch {mark}"))
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        rec = client.submit(attempt_on_a_closing_worker, pure=False).result(timeout=60)
    time.sleep(1.5)         # longer than the command: a process left running would have made the mark
    assert not rec.succeeded and rec.exit_code != 0
    assert not mark.exists()


def test_a_python_task_with_no_stored_argument_does_not_import_staging_on_its_node(tmp_path):
    # Staging (and fsspec) is a node's first Python task's largest import, and a call whose
    # arguments all travelled inline needs none of it; one with a stored argument still reads it.
    import subprocess
    import sys
    code = (
        "import sys, cloudpickle\n"
        "from batchnb.node.runner import run_attempt\n"
        "from batchnb.node.attempt import AttemptRequest\n"
        "def f(x): return x + 1\n"
        f"rec = run_attempt(AttemptRequest('j', 't1', 1, 'p', python=cloudpickle.dumps((f, (41,), {{}})), "
        f"node_root={str(tmp_path)!r}))\n"
        "assert rec.succeeded and cloudpickle.loads(rec.result) == 42, rec\n"
        "print('batchnb.staging' in sys.modules, 'fsspec' in sys.modules)\n"
        "from batchnb.staging.argstore import store\n"
        "ref = store(cloudpickle.dumps(b'x' * 10), " + repr(tmp_path.as_uri()) + ", {})\n"
        "rec = run_attempt(AttemptRequest('j', 't2', 1, 'p', python=cloudpickle.dumps((len, (ref,), {})), "
        f"node_root={str(tmp_path)!r}))\n"
        "print(rec.succeeded, cloudpickle.loads(rec.result))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True", "10"]
