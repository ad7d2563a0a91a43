"""A bundle's command batch (batchnb/node/cmdbatch.py): plain commands run with one setup per bundle,
and show what the runner shows: exit codes, logs and tails, Azure's variables, wall clocks, kills,
folders. Real processes; the last test kills a real pool's worker in the middle of a bundle."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import cloudpickle
import dask.config

from batchnb.node import bundle, cmdbatch, runner
from batchnb.node.attempt import TAIL_BYTES
from batchnb.node.runner import AttemptRequest
from waiting import wait_for
from processes import alive


def request(tmp_path, task_id, **kw) -> AttemptRequest:
    base = dict(job_id="j", task_id=task_id, attempt=1, pool_id="p", node_root=str(tmp_path / "nodes"))
    base.update(kw)
    return AttemptRequest(**base)


def add(x, y=0):
    return x + y


def test_a_bundles_plain_commands_go_through_its_command_batch_and_the_rest_through_the_runner(tmp_path, monkeypatch):
    seen, real = [], runner.run_attempt

    def spy(req, **kw):
        seen.append(req.task_id)
        return real(req, **kw)
    monkeypatch.setattr(runner, "run_attempt", spy)
    recs = bundle.run_bundle([
        request(tmp_path, "cmd", command="echo hi"),
        request(tmp_path, "argv", command=["/bin/true"]),
        request(tmp_path, "py", python=cloudpickle.dumps((add, (1, 2), {}))),
        request(tmp_path, "secret", command="echo $TOKEN", secrets={"TOKEN": "s3cr3t"}),
    ])
    assert [r.task_id for r in recs] == ["cmd", "argv", "py", "secret"]
    assert all(r.succeeded for r in recs), recs
    assert recs[0].stdout_tail == "hi\n" and cloudpickle.loads(recs[2].result) == 3
    assert recs[3].stdout_tail == "***\n"            # a secret's masking stays the runner's
    assert seen == ["py", "secret"]


def test_a_batched_command_shows_what_the_runner_shows(tmp_path):
    batch = cmdbatch.CommandBatch()
    cases = {
        "vars": dict(command='echo "$AZ_BATCH_TASK_ID $AZ_BATCH_JOB_ID $AZ_BATCH_TASK_ATTEMPT"; pwd; '
                             'echo "$AZ_BATCH_TASK_WORKING_DIR $AZ_BATCH_TASK_DIR"; echo "$MINE"; '
                             'env | grep -c ^AZ_BATCH_', env={"MINE": "here", "PATH": os.environ["PATH"]}),
        "argv": dict(command=("echo", "$HOME", "a;b")),
        "fails": dict(command="echo out; echo oops >&2; exit 7"),
        "missing": dict(command=("/no/such/program",)),
        "long": dict(command=f"head -c {3 * TAIL_BYTES} /dev/zero | tr '\\0' x; echo end"),
        "made": dict(command="echo data > out.txt"),
        "beside": dict(command='echo note > "$AZ_BATCH_TASK_DIR/note.txt"'),
        "quiet": dict(command=["/bin/true"]),
    }
    ours = {name: batch.run(request(tmp_path / "a", name, **kw)) for name, kw in cases.items()}
    theirs = {name: runner.run_attempt(request(tmp_path / "b", name, **kw)) for name, kw in cases.items()}
    def same_place(value):
        return value.replace(str(tmp_path / "b"), str(tmp_path / "a")) if isinstance(value, str) else value
    for name in cases:
        a, b = ours[name], theirs[name]
        for field in ("exit_code", "category", "message", "stdout_tail", "stderr_tail", "succeeded"):
            assert getattr(a, field) == same_place(getattr(b, field)), (name, field, a, b)
        assert (a.task_dir is None) == (b.task_dir is None), (name, a, b)
        assert a.start <= a.end
    lines = ours["vars"].stdout_tail.splitlines()
    assert lines[0] == "vars j 1" and lines[1] == os.path.join(ours["vars"].task_dir, "wd")
    assert lines[2] == f"{lines[1]} {ours['vars'].task_dir}" and lines[3] == "here"
    assert ours["fails"].message == "exit code 7" and ours["fails"].stderr_tail == "oops\n"
    assert ours["missing"].exit_code == 127 and "cannot start" in ours["missing"].message
    assert ours["long"].stdout_tail == "x" * (TAIL_BYTES - 4) + "end\n"
    assert Path(ours["made"].task_dir, "wd", "out.txt").read_text() == "data\n"
    assert Path(ours["beside"].task_dir, "note.txt").read_text() == "note\n"
    # What holds nothing is gone when the bundle ends (no background removal to wait for) ...
    assert ours["quiet"].task_dir is None
    batch.close()
    assert not list((tmp_path / "a" / "nodes").glob("*/workitems/j/quiet"))
    # ... and what is kept is readable by its owner only, as the runner makes it.
    kept = Path(ours["fails"].task_dir)
    for path, mode in ((kept, 0o700), (kept / "wd", 0o700), (kept.parent, 0o700),
                       (kept / "stdout.txt", 0o600), (kept / "stderr.txt", 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_an_attempt_that_left_nothing_lends_its_folder_to_the_next_which_finds_it_as_new(tmp_path):
    recs = bundle.run_bundle([
        request(tmp_path, "a", command=["/bin/true"]),
        request(tmp_path, "b", command='ls -A; ls -A "$AZ_BATCH_TASK_DIR"; stat -c %a . "$AZ_BATCH_TASK_DIR"'),
        request(tmp_path, "c", command="chmod 755 .; true"),        # left empty, but not as it was made
        request(tmp_path, "d", command='touch x; stat -c %a .'),
        request(tmp_path, "e", command=["/bin/true"]),
        request(tmp_path, "f", command=["/bin/true"], attempt=3),
    ])
    assert all(r.succeeded for r in recs), recs
    assert recs[1].stdout_tail == "stderr.txt\nstdout.txt\nwd\n700\n700\n"      # nothing of a's
    assert recs[1].task_dir.endswith(os.path.join("j", "b", "1"))
    assert recs[2].task_dir is None                     # its folder's mode changed: removed, not lent
    assert recs[3].stdout_tail == "700\n" and Path(recs[3].task_dir, "wd", "x").exists()
    assert recs[0].task_dir is None and recs[4].task_dir is None and recs[5].task_dir is None
    workitems = next((tmp_path / "nodes").glob("*/workitems/j"))
    assert sorted(p.name for p in workitems.iterdir()) == ["b", "d"]     # the others: nothing left


def test_a_task_folder_holding_only_the_lent_attempt_is_lent_whole_and_one_holding_more_is_kept(tmp_path):
    """The task's folder goes on with the attempt's (one rename, no mkdir and rmdir per command):
    the next task's folder is the same inode. A task folder that keeps another attempt stays."""
    batch = cmdbatch.CommandBatch()
    try:
        first = batch.run(request(tmp_path, "a", command=["/bin/true"]))
        workitems = next((tmp_path / "nodes").glob("*/workitems/j"))
        inode = (workitems / "a").stat().st_ino
        second = batch.run(request(tmp_path, "b", command='echo "$PWD"; ls -A ..; exit 3'))
        assert first.succeeded and first.task_dir is None and not (workitems / "a").exists()
        assert (workitems / "b").stat().st_ino == inode, "the task folder was made anew, not lent"
        assert second.exit_code == 3 and second.stdout_tail == f"{workitems / 'b' / '1' / 'wd'}\nstderr.txt\n" \
            "stdout.txt\nwd\n", second.stdout_tail
        # b's attempt 1 is kept (it failed); its attempt 2 succeeds and leaves nothing, and the
        # next task may not take b's folder with attempt 1 in it.
        again = batch.run(request(tmp_path, "b", command=["/bin/true"], attempt=2))
        third = batch.run(request(tmp_path, "c", command=["/bin/true"]))
        assert again.succeeded and third.succeeded
        assert sorted(p.name for p in (workitems / "b").iterdir()) == ["1"]
        assert (workitems / "b").stat().st_ino == inode and (workitems / "c").is_dir()
    finally:
        batch.close()
    assert sorted(p.name for p in workitems.iterdir()) == ["b"]


def test_a_folder_whose_command_left_a_process_behind_is_not_lent(tmp_path):
    # The process left behind has its working directory in the folder: lent on, it would write
    # into the next command's folder. Removed instead, its write finds no folder.
    recs = bundle.run_bundle([
        request(tmp_path, "leaves", command="(sleep 1; touch late) >/dev/null 2>&1 &"),
        request(tmp_path, "next", command="sleep 3; ls -A"),
    ])
    assert recs[0].succeeded and recs[0].task_dir is None
    assert recs[1].succeeded and recs[1].stdout_tail == "", recs[1]
    assert not list((tmp_path / "nodes").glob("*/workitems/j/*/1/wd/late"))


def test_a_batched_commands_wall_clock_kills_its_whole_tree(tmp_path):
    pids = tmp_path / "pids"
    cmd = (f"trap '' TERM; echo $$ >> {pids}; "
           f"sh -c 'trap \"\" TERM; echo $$ >> {pids}; sleep 60' & "
           f"setsid sh -c 'echo $$ >> {pids}; sleep 60' & wait")
    t0 = time.monotonic()
    recs = bundle.run_bundle([request(tmp_path, "slow", command=cmd, max_wall_clock=1.0),
                              request(tmp_path, "next", command="echo after")])
    assert recs[0].category == runner.TIMEOUT and recs[0].exit_code is None
    assert recs[0].message == "killed at max_wall_clock of 1s with all its processes"
    assert 1.0 <= time.monotonic() - t0 < 15
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 3 and not [p for p in found if alive(p)]
    assert recs[1].succeeded and recs[1].stdout_tail == "after\n"


def test_a_terminate_kills_the_running_command_and_the_bundle_goes_on(tmp_path):
    pid_file = tmp_path / "pid"
    out: list = []
    thread = threading.Thread(target=lambda: out.append(bundle.run_bundle([
        request(tmp_path, "long", command=f"sh -c 'echo $$ > {pid_file}; exec sleep 60' & wait"),
        request(tmp_path, "next", command="echo after")])), daemon=True)
    thread.start()
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30, what="the command to start")
    child = int(pid_file.read_text())
    assert runner.kill_attempts([("j", "long", 1)]) == 1
    thread.join(30)
    long, nxt = out[0]
    assert long.category == runner.TERMINATED and long.message == "killed by job.terminate()"
    assert not alive(child)                         # shown ended, nothing of it still runs
    assert nxt.succeeded and nxt.stdout_tail == "after\n"
    assert not any(k[1] in ("long", "next") for k in runner._running)


def test_a_kill_that_arrives_before_the_command_starts_it_never(tmp_path):
    mark = tmp_path / "ran"
    runner.kill_attempts([("j", "early", 1)])
    (rec,) = bundle.run_bundle([request(tmp_path, "early", command=f"touch {mark}")])
    assert rec.category == runner.TERMINATED and rec.message.endswith("before it started")
    assert not mark.exists()
    (rec,) = bundle.run_bundle([request(tmp_path, "early", attempt=2, command=f"touch {mark}")])
    assert rec.succeeded and mark.exists()          # the kill was for that attempt only


def test_a_command_that_starts_while_its_worker_closes_is_killed_at_once(tmp_path):
    from distributed import Client, LocalCluster, get_worker
    from distributed.core import Status
    mark = tmp_path / "ran"

    def bundle_on_a_closing_worker():
        get_worker().status = Status.closing_gracefully       # what retire_workers sets first
        return bundle.run_bundle([request(tmp_path, "late", command=f"sleep 1; touch {mark}")])
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        (rec,) = client.submit(bundle_on_a_closing_worker, pure=False).result(timeout=60)
    time.sleep(1.5)         # longer than the command: a process left running would have made the mark
    assert not rec.succeeded and rec.exit_code != 0
    assert not mark.exists()


def noop(x=None):
    return x


def test_a_worker_killed_in_the_middle_of_a_bundle_of_commands_requeues_them_task_by_task(tmp_path, unique):
    from pools import temporary_pool
    mark, gate, left = tmp_path / "killed", tmp_path / "open", tmp_path / "left"
    with dask.config.set({"batchnb.bundle-target": "5s"}), temporary_pool("cmdbatch", dedicated=1) as pool:
        warm = pool.job("warm")             # the pool learns its tasks are tiny: bundles start then
        warm.map(noop, range(20))
        assert warm.wait(quiet=True, timeout=120).ok
        job = pool.job(unique)
        specs = [{"id": "gate", "command": f"while [ ! -e {gate} ]; do sleep 0.01; done"}]
        specs += [{"id": f"c{i}", "command": f"echo {i}", "depends_on": ["gate"]} for i in range(10)]
        # $PPID of the command's shell is the worker process that started it: killed once, mid-bundle,
        # with a process of the command's still running (it must not outlive its node's worker).
        specs.append({"id": "killer", "command": f"[ -e {mark} ] || {{ touch {mark}; sleep 60 & echo $! > {left}; "
                                                 f"kill -9 $PPID; wait; }}", "depends_on": ["gate"]})
        specs += [{"id": f"d{i}", "command": f"echo {i}", "depends_on": ["gate"]} for i in range(10)]
        job.add_tasks(specs)
        gate.touch()
        assert job.wait(quiet=True, timeout=300).ok
        # Before the pool's close (which would kill it too): the node's restart did.
        wait_for(lambda: not alive(int(left.read_text())), timeout=30, what="the dead worker's command to end")
        states = {s["id"]: [a["state"] for a in job.task(s["id"]).attempts] for s in specs}
    assert mark.exists()
    assert states["killer"] == ["requeued", "succeeded"], states
    # The others of its bundle were shown running and their records died with the worker: each is
    # requeued on its own and succeeds once; none is failed or retried for the node's loss.
    requeued = [k for k, v in states.items() if v == ["requeued", "succeeded"]]
    assert len(requeued) > 1, states
    assert all(v in (["succeeded"], ["requeued", "succeeded"]) for v in states.values()), states
    assert all(job.task(f"c{i}").stdout() == f"{i}\n" for i in range(10))
