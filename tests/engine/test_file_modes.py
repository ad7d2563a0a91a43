"""The ledger, its WAL and SHM and its folder, the home, and attempt folders with their stdout/stderr
are their owner's only (issue 16, point 5): checked with os.stat."""

from __future__ import annotations

import os
import stat

from batchnb import _config
from batchnb.engine.ledger import Ledger
from batchnb.node import runner
from batchnb.node.runner import AttemptRequest


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_ledger_its_wal_shm_and_folder_are_the_owners_only(tmp_path):
    path = tmp_path / "new" / "ledger.sqlite"
    led = Ledger(path)
    led.job("j")
    assert mode(path.parent) == 0o700
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        assert mode(path.parent / name) == 0o600, name


def test_an_older_ledger_made_0644_is_tightened_when_opened(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).job("j")
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        os.chmod(tmp_path / name, 0o644)
    Ledger(path)
    assert [mode(tmp_path / n) for n in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm")] == [0o600] * 3


def test_the_home_folder_is_made_0700(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "a" / "home"))
    assert mode(_config.home()) == 0o700


def test_an_attempt_folder_and_its_output_files_are_the_owners_only(tmp_path):
    req = AttemptRequest(job_id="j", task_id="t", attempt=1, pool_id="p", node_root=str(tmp_path / "nodes"),
                         command="echo out; echo err >&2")
    rec = runner.run_attempt(req)
    assert rec.succeeded and rec.task_dir
    for folder in (rec.task_dir, os.path.join(rec.task_dir, "wd"), os.path.dirname(rec.task_dir),
                   os.path.join(tmp_path, "nodes", rec.node_id, "workitems")):
        assert mode(folder) == 0o700, folder
    assert mode(os.path.join(rec.task_dir, "stdout.txt")) == mode(os.path.join(rec.task_dir, "stderr.txt")) == 0o600
