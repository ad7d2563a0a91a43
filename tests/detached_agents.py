"""What the detached-pool tests share: the agents a test's batchnb home records, stopping them
by pid, and a detached pool made in a home of its own (closed, and its agent killed, after)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from waiting import wait_for


def agent_records(home: Path) -> list[dict]:
    """The records of the agents running under batchnb home ``home`` (those readable now)."""
    out = []
    for path in (home / "pools").glob("*.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return out


def note_agents(home: Path, noted: set) -> None:
    """Add ``home``'s agents (pid, creation time) to ``noted``, to be stopped after the test."""
    noted |= {(r["pid"], r.get("process_created")) for r in agent_records(home) if isinstance(r.get("pid"), int)}


def stop_agents(home: Path, noted: set, timeout: float = 60) -> None:
    """SIGTERM (then SIGKILL) the agents this test started: those of its home's records, and
    those it noted; each only if it is still the same process (an unreaped zombie is gone).
    SIGTERM lets an agent close its pool, so a remote pool's jobs or VMs go with it."""
    from batchnb.agent.registry import alive
    found = set(noted)
    note_agents(home, found)
    live = [r for r in ({"pid": pid, "process_created": created} for pid, created in found) if alive(r)]
    for r in live:
        os.kill(r["pid"], signal.SIGTERM)
    try:
        wait_for(lambda: not any(alive(r) for r in live), timeout, "the test's agents to stop")
    except Exception:  # noqa: BLE001 - a stuck agent is killed
        for r in live:
            if alive(r):
                os.kill(r["pid"], signal.SIGKILL)


@contextlib.contextmanager
def detached_pool(home: Path, name: str, **options):
    """``bnb.Pool(name, detached=True, **options)`` with ``home`` as the batchnb home."""
    import batchnb as bnb
    import batchnb.engine.ledger
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BATCHNB_HOME", str(home))
        mp.setattr(batchnb.engine.ledger, "_default_ledger", None)
        try:
            pool = bnb.Pool(name, detached=True, **options)
        except BaseException:
            # The agent may have started before Pool() failed (attaching to its ledger, say):
            # nothing would stop it, and it would outlive the run.
            stop_agents(home, set())
            raise
        pid = pool._record["pid"]
        try:
            yield pool
        finally:
            try:
                pool.close()
            finally:
                if psutil.pid_exists(pid):
                    os.kill(pid, signal.SIGKILL)


REPO = Path(__file__).resolve().parents[1]


def script_env(home: Path, **extra: str) -> dict:
    """The environment of a test's script: batchnb home ``home``, this checkout and tests/ first."""
    return {**os.environ, "BATCHNB_HOME": str(home), **extra,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


def start_script(tmp_path: Path, name: str, text: str, home: Path, *args: str) -> subprocess.Popen:
    """Run ``text`` (dedented) as a script in a session of its own, as Jupyter starts a kernel:
    the test signals, or kills, its whole group (:func:`end_script`)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return subprocess.Popen([sys.executable, str(path), *args], env=script_env(home), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def end_script(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
