"""A damaged ledger says so and is never written into; check, backup and salvage on real damage.

Each kind of damage (truncated, garbage pages in the middle, a text file, an
empty file, a SQLite file that is not a ledger) is made on a copy of a real
ledger of many rows.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading

import pytest

import batchnb as bnb
from batchnb.engine import ledger_repair
from batchnb.engine.ledger import Ledger
from batchnb.errors import LedgerError

N_TASKS = 3000


@pytest.fixture(scope="module")
def sound(tmp_path_factory):
    """A real ledger of many rows, checkpointed into its main file, closed."""
    path = tmp_path_factory.mktemp("sound") / "ledger.sqlite"
    led = Ledger(path)
    led.create_job("big", {"id": "big"}, "local", now=1.0)
    led.add_tasks("big", [(f"t{i}", i, '{"command": "echo %s"}' % ("x" * 200), "active") for i in range(N_TASKS)],
                  now=2.0)
    led.audit("made", "big")
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def _truncated(src, dst):
    shutil.copy(src, dst)
    os.truncate(dst, os.path.getsize(dst) // 2)


def _garbage_in_middle(src, dst):
    shutil.copy(src, dst)
    size = os.path.getsize(dst)
    with open(dst, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(bytes(range(256)) * 64)          # 16 KiB: four pages of a 4 KiB-page ledger


def _text(src, dst):
    dst.write_text("jobs:\n  - nightly\n")


def _empty(src, dst):
    dst.write_bytes(b"")


def _foreign_sqlite(src, dst):
    con = sqlite3.connect(dst)
    con.execute("CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO photos(name) VALUES ('cat.jpg')")
    con.commit()
    con.close()


DAMAGE = {"truncated": (_truncated, "is damaged"), "garbage": (_garbage_in_middle, "is damaged"),
          "text": (_text, "is a text file"), "empty": (_empty, "is an empty file (0 bytes)"),
          "foreign": (_foreign_sqlite, "not a batchnb ledger")}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_ledger_is_a_ledger_error_and_is_not_written(kind, sound, tmp_path, monkeypatch):
    make, said = DAMAGE[kind]
    path = tmp_path / "ledger.sqlite"
    make(sound, path)
    before = _digest(path)
    for open_it in (lambda: Ledger(path), lambda: bnb.jobs(Ledger(path))):
        with pytest.raises(LedgerError) as caught:
            open_it()
        message = str(caught.value)
        assert said in message and str(path) in message and "\n" not in message, message
        if kind in ("truncated", "garbage"):
            assert "batchnb --ledger" in message and "ledger salvage" in message and "ledger check" in message
        elif kind == "empty":
            assert f"rm {path}" in message           # what to do, not a silent new ledger
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path))   # the default ledger is this file: bnb.jobs()
    with pytest.raises(LedgerError, match="batchnb did not write to it"):
        bnb.jobs()
    assert _digest(path) == before
    verdict = ledger_repair.check(path)
    assert verdict["ok"] is False and verdict["problems"]


def test_a_sound_ledger_checks_ok_and_a_new_one_is_made_whole(sound, tmp_path):
    verdict = ledger_repair.check(sound)
    assert verdict["ok"] and verdict["tables"]["tasks"] == N_TASKS and verdict["problems"] == []
    # Many threads opening one new file: each finds a whole ledger, none a 0-byte file.
    path = tmp_path / "new.sqlite"
    errors = []

    def open_it():
        try:
            Ledger(path).jobs()
        except Exception as exc:      # pragma: no cover - what the test looks for
            errors.append(exc)
    threads = [threading.Thread(target=open_it) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and ledger_repair.check(path)["ok"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".new")]


def test_salvage_recovers_the_intact_rows_around_garbage(sound, tmp_path):
    path, dest = tmp_path / "ledger.sqlite", tmp_path / "salvaged.sqlite"
    _garbage_in_middle(sound, path)
    report = ledger_repair.salvage(path, dest)
    tasks = report["tasks"]
    assert 0 < tasks["lost"] < N_TASKS // 4 and tasks["kept"] + tasks["lost"] == N_TASKS, report
    assert report["jobs"] == {"kept": 1, "lost": 0} and report["audit"]["kept"] == 1
    salvaged = Ledger(dest)                                       # a sound ledger of the current schema
    assert ledger_repair.check(dest)["ok"]
    kept = {r["id"] for r in salvaged.tasks("big", ["id"])}
    assert len(kept) == tasks["kept"] and {"t0", f"t{N_TASKS - 1}"} <= kept
    assert salvaged.task("big", "t0")["spec"] == '{"command": "echo %s"}' % ("x" * 200)
    with pytest.raises(LedgerError, match="exists"):
        ledger_repair.salvage(path, dest)                         # never over a file


def test_salvage_of_a_truncated_ledger_keeps_what_is_before_the_cut(sound, tmp_path):
    path, dest = tmp_path / "ledger.sqlite", tmp_path / "salvaged.sqlite"
    _truncated(sound, path)
    report = ledger_repair.salvage(path, dest)
    assert report["jobs"]["kept"] == 1 and 0 < report["tasks"]["kept"] < N_TASKS, report
    assert ledger_repair.check(dest)["ok"]


@pytest.mark.parametrize("kind", ["text", "empty"])
def test_salvage_of_what_is_not_sqlite_says_there_is_nothing(kind, sound, tmp_path):
    path = tmp_path / "ledger.sqlite"
    DAMAGE[kind][0](sound, path)
    with pytest.raises(LedgerError, match="nothing to salvage"):
        ledger_repair.salvage(path, tmp_path / "out.sqlite")


def test_backup_copies_online_while_a_writer_writes(tmp_path):
    path, dest = tmp_path / "ledger.sqlite", tmp_path / "backup.sqlite"
    led = Ledger(path)
    led.create_job("j", {"id": "j"}, "p", now=1.0)
    stop = threading.Event()

    def write():
        n = 0
        while not stop.is_set():
            led.add_tasks("j", [(f"w{n}-{i}", n * 100 + i, "{}", "active") for i in range(100)], now=2.0)
            n += 1
    writer = threading.Thread(target=write)
    writer.start()
    try:
        while not led.task_counts("j"):
            pass
        ledger_repair.backup(path, dest)
    finally:
        stop.set()
        writer.join()
    verdict = ledger_repair.check(dest)
    assert verdict["ok"] and verdict["tables"]["tasks"] % 100 == 0 and verdict["tables"]["tasks"] > 0
    assert Ledger(dest).job("j")["state"] == "active"
    with pytest.raises(LedgerError, match="exists"):
        ledger_repair.backup(path, dest)
