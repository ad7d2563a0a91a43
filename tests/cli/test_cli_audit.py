"""``batchnb audit``, run for real as a subprocess against a ledger of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batchnb.engine import audit
from batchnb.engine.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]


def _bnb(home: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "BATCHNB_HOME": str(home),
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "batchnb.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)


def _ledger(path: Path) -> Ledger:
    led = Ledger(path)
    led.create_job("j1", {"id": "j1"}, pool="p1", now=1.0)
    with audit.acting_as("alice"):
        audit.record(led, "pool-create", "pool:p1", detail="backend local, dedicated 1, spot 0", pool="p1")
        audit.record(led, "job-create", "job:j1", pool="p1")
        audit.record(led, "task-add", "job:j1", detail="3 tasks", pool="p1")
    audit.record(led, "role-grant", "job:j1", identity="owner", detail="bob: reader")     # a record without a pool
    audit.record(led, "pool-resize", "pool:p2", outcome="failed: SpecError: dedicated: -1 is invalid",
                 identity="bob", pool="p2")
    return led


def test_audit_prints_one_line_per_record_and_filters(tmp_path):
    path = tmp_path / "l.sqlite"
    _ledger(path)
    out = _bnb(tmp_path / "home", "audit", "--ledger", path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5
    assert lines[0].endswith(" alice pool-create pool:p1 ok backend local, dedicated 1, spot 0")
    assert lines[4].endswith(" bob pool-resize pool:p2 failed: SpecError: dedicated: -1 is invalid")
    # The global --ledger before the verb works as for every other verb.
    assert _bnb(tmp_path / "home", "--ledger", path, "audit").stdout == out.stdout

    by_pool = _bnb(tmp_path / "home", "audit", "--ledger", path, "--pool", "p1").stdout.splitlines()
    assert [line.split()[2] for line in by_pool] == ["pool-create", "job-create", "task-add", "role-grant"]
    by_job = json.loads(_bnb(tmp_path / "home", "audit", "--ledger", path, "--job", "J1", "--json").stdout)
    assert [(r["identity"], r["action"], r["outcome"], r["job"]) for r in by_job] == [
        ("alice", "job-create", "ok", "j1"), ("alice", "task-add", "ok", "j1"), ("owner", "role-grant", "ok", "j1")]
    assert _bnb(tmp_path / "home", "audit", "--ledger", path, "--since", "1h", "--identity", "bob").stdout \
        .split()[2:4] == ["pool-resize", "pool:p2"]
    assert _bnb(tmp_path / "home", "audit", "--ledger", path, "--since", "2999-01-01").stdout == ""


def test_a_bad_since_is_refused_naming_it(tmp_path):
    path = tmp_path / "l.sqlite"
    _ledger(path)
    out = _bnb(tmp_path / "home", "audit", "--ledger", path, "--since", "last tuesday")
    assert out.returncode == 2 and "since" in out.stderr and "'last tuesday'" in out.stderr and out.stdout == ""


def test_audit_reads_the_default_ledger_of_the_home(tmp_path):
    home = tmp_path / "home"
    _ledger(home / "ledger.sqlite")
    out = _bnb(home, "audit", "--pool", "p2")
    assert out.returncode == 0, out.stderr
    assert [line.split()[1:3] for line in out.stdout.splitlines()] == [["bob", "pool-resize"]]
