"""The local backend's node processes: commands in sessions of their own.

Each driver here is a real script in a session of its own, and every process
it leads to (node workers, task processes, their children) carries a marker
unique to the test in its environment, so the test finds exactly its own
processes, and its cleanup kills only those.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psutil
from pools import temporary_pool
from waiting import wait_for
from processes import alive

REPO = Path(__file__).resolve().parents[2]
MARK = "BATCHNB_TEST_PROCESS_MARK"


def marked(mark: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose environment carries ``MARK=mark``."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(MARK) == mark:
                out.append(p)
        except (psutil.Error, OSError):
            pass
    return out


def start_script(tmp_path, text: str, *args: str) -> tuple[subprocess.Popen, str]:
    script = tmp_path / "driver.py"
    script.write_text(text)
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark, "BATCHNB_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc, mark


def cleanup(proc: subprocess.Popen, mark: str) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for p in marked(mark):
        try:
            p.kill()
        except psutil.Error:
            pass


KILLED_DRIVER = textwrap.dedent("""
    import subprocess
    import sys
    import time
    import batchnb as bnb
    from batchnb.engine.ledger import Ledger

    def python_task():
        # In a process of its own (it has a wall clock), with a child of its own.
        subprocess.Popen(["sleep", "300"])
        time.sleep(300)

    def inline_task(started):
        open(started, "w").close()
        time.sleep(300)     # in a worker thread, which nothing can stop: it holds its node's close

    if __name__ == "__main__":
        with bnb.Pool("doomed", dedicated=3, task_slots_per_node=2, ledger=Ledger(sys.argv[1])) as pool:
            job = pool.job("left-behind")
            job.add_task("plain", "sleep 300")
            job.add_task("setsid", "setsid sleep 300")
            job.add_task("forked", "setsid -f sleep 300; sleep 300")   # a child that leaves the tree
            job.submit(python_task, task_id="python", max_wall_clock="1h")
            job.submit(inline_task, sys.argv[2], task_id="inline")
            print("dispatched", flush=True)
            job.wait(quiet=True)
""")


def test_no_task_or_node_process_outlives_a_sigkilled_driver(tmp_path):
    inline = tmp_path / "inline-started"
    proc, mark = start_script(tmp_path, KILLED_DRIVER, str(tmp_path / "l.sqlite"), str(inline))
    try:
        def all_running():
            assert proc.poll() is None, proc.stdout.read()
            lines = []
            for p in marked(mark):
                try:
                    lines.append(" ".join(p.cmdline()))
                except psutil.Error:
                    pass
            return (inline.exists() and sum(line == "sleep 300" for line in lines) >= 5
                    and any("batchnb.node.pychild" in line for line in lines))
        wait_for(all_running, 60, "every task's processes to run")
        proc.kill()
        proc.wait(timeout=10)
        # Nodes notice their driver is gone and close, killing their tasks' processes on the way;
        # the node held by a Python task's thread ends itself after a grace period.
        wait_for(lambda: not marked(mark), 30, "no process of the killed driver's pool to be left")
    finally:
        cleanup(proc, mark)


NO_GUARD = textwrap.dedent("""
    import sys
    import batchnb as bnb
    from batchnb.engine.ledger import Ledger

    def square(x):
        return x * x

    with bnb.Pool("unguarded", dedicated=2, ledger=Ledger(sys.argv[1])) as pool:
        job = pool.job("plain-script")
        squares = job.map(square, range(3))
        job.add_task("cmd", "echo from a command")
        result = job.wait(timeout=60, quiet=True)
        print("squares", [t.result() for t in squares], flush=True)
        print("counts", sorted(result.counts.items()), flush=True)
""")


def test_a_script_needs_no_main_guard(tmp_path):
    proc, mark = start_script(tmp_path, NO_GUARD, str(tmp_path / "l.sqlite"))
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        cleanup(proc, mark)
    lines = out.splitlines()
    assert "squares [0, 1, 4]" in lines and "counts [('succeeded', 4)]" in lines, out
    assert proc.returncode == 0, out


def test_nodes_live_in_sessions_of_their_own(tmp_path):
    with temporary_pool("sessions", dedicated=2) as pool:
        pids = pool.client.run(os.getpid)
        assert len(pids) == 2
        for pid in pids.values():
            # Not the driver's session (so not its process group): a terminal's or Jupyter's
            # SIGINT to the driver's group does not reach them.
            assert os.getsid(pid) == pid != os.getsid(0)
            assert os.getpgid(pid) != os.getpgid(0)
    wait_for(lambda: not any(alive(p)
                             for p in pids.values()), 20, "the node processes to end with the pool")


def test_a_preempted_nodes_orphaned_task_processes_are_killed(tmp_path):
    """A task's child that left its process tree (``setsid -f``) still dies with its node."""
    mark = uuid.uuid4().hex
    pidfile = tmp_path / "orphan.pid"
    try:
        with temporary_pool("orphans", dedicated=0, spot=1) as pool:
            job = pool.job("orphaned")
            job.add_task("t", f"{MARK}={mark} setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 300'; sleep 300")
            pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the orphan"))
            pidfile.unlink()
            pool.preempt("spot-0")
            wait_for(lambda: not alive(pid),
                     20, "the preempted node's orphaned task process to be killed")
    finally:
        for p in marked(mark):
            p.kill()
