"""``batchnb ledger check | backup | salvage`` and the one-line error of a damaged ledger, as subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchnb.engine.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]


def bnb(home: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "BATCHNB_HOME": str(home), "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "batchnb.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def damaged(tmp_path):
    """A ledger of 2000 tasks with garbage written over four pages in its middle."""
    path = tmp_path / "ledger.sqlite"
    led = Ledger(path)
    led.create_job("big", {"id": "big"}, "local", now=1.0)
    led.add_tasks("big", [(f"t{i}", i, '{"command": "%s"}' % ("y" * 300), "active") for i in range(2000)], now=2.0)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2 // 4096 * 4096)
        f.write(b"\xde\xad\xbe\xef" * 4096)
    return path


def test_a_damaged_ledger_is_one_line_and_exit_2(damaged, tmp_path):
    before = hashlib.sha256(damaged.read_bytes()).hexdigest()
    for args in (("--ledger", damaged, "jobs"), ("jobs",), ("--ledger", damaged, "show", "big")):
        res = bnb(tmp_path, *args)               # BATCHNB_HOME=tmp_path: the default ledger is this file
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("batchnb: the ledger ") and res.stderr.count("\n") == 1, res.stderr
        assert "Traceback" not in res.stderr and str(damaged) in res.stderr and "ledger salvage" in res.stderr
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    res = bnb(tmp_path, "--ledger", empty, "jobs")
    assert res.returncode == 2 and "empty file" in res.stderr and f"rm {empty}" in res.stderr
    assert empty.stat().st_size == 0
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == before


def test_check_says_damaged_and_salvage_recovers_the_intact_rows(damaged, tmp_path):
    res = bnb(tmp_path, "--ledger", damaged, "ledger", "check")
    assert res.returncode == 1 and "DAMAGED" in res.stdout and "Traceback" not in res.stderr
    dest = tmp_path / "salvaged.sqlite"
    res = bnb(tmp_path, "--ledger", damaged, "ledger", "salvage", dest, "--json")
    assert res.returncode == 0, res.stderr
    tasks = json.loads(res.stdout)["tables"]["tasks"]
    assert 1000 < tasks["kept"] < 2000 and tasks["kept"] + tasks["lost"] == 2000, tasks
    res = bnb(tmp_path, "--ledger", dest, "ledger", "check")
    assert res.returncode == 0 and ": ok (schema version" in res.stdout and f"tasks {tasks['kept']}" in res.stdout
    res = bnb(tmp_path, "--ledger", dest, "jobs", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)[0]["id"] == "big"


def test_backup_then_check(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).create_job("j", {"id": "j"}, "p", now=1.0)
    res = bnb(tmp_path, "--ledger", path, "ledger", "backup", tmp_path / "copy.sqlite")
    assert res.returncode == 0, res.stderr
    res = bnb(tmp_path, "--ledger", tmp_path / "copy.sqlite", "ledger", "check", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["tables"]["jobs"] == 1
    res = bnb(tmp_path, "--ledger", path, "ledger", "backup", tmp_path / "copy.sqlite")
    assert res.returncode == 2 and "exists" in res.stderr
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    res = bnb(tmp_path, "--ledger", text, "ledger", "check")
    assert res.returncode == 1 and "text file" in res.stdout
