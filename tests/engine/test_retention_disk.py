"""Disk stays bounded: attempt folders follow Azure's retention_time (7 days by default; a
succeeded attempt whose folder holds nothing leaves none), and bnb.prune() shrinks the
ledger file (issue 12, point 9)."""

from __future__ import annotations

import os
from pathlib import Path

import batchnb as bnb
from batchnb.engine.ledger import Ledger
from batchnb.engine.retention import apply_retention


def _attempt_dirs(home: Path, job_id: str) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_dir() and p.name.isdigit()
            and p.parent.parent.name == job_id and p.parent.parent.parent.name == "workitems"]


def _ledger_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def test_no_op_tasks_leave_no_attempt_folders_and_a_failed_one_keeps_its_own(home):
    with bnb.Pool("noops", dedicated=2) as pool:
        job = pool.job("noops")
        job.add_tasks([bnb.TaskSpec(f"t{i}", "true") for i in range(200)])
        job.add_task("fails", "exit 3")
        job.add_task("says", "echo something")
        result = job.wait(timeout=180, quiet=True)
        assert result.counts == {"succeeded": 201, "failed": 1}, result
        kept = {Path(a["task_dir"]).parent.name for a in pool.ledger.attempts("noops") if a["task_dir"]}
        failed = job.task("fails").attempts[-1]
    assert kept == {"fails", "says"}
    assert {p.parent.name for p in _attempt_dirs(home, "noops")} == {"fails", "says"}
    folder = Path(failed["task_dir"])             # empty, but a failure's: kept for whoever looks
    assert folder.is_dir() and not any((folder / "wd").iterdir())
    assert (folder / "stdout.txt").read_text() == ""


def test_a_task_without_retention_time_keeps_its_folders_seven_days(home):
    with bnb.Pool("keep7", dedicated=1) as pool:
        job = pool.job("keep7")
        t = job.add_task("made", "echo made > out.txt")
        job.wait(timeout=60, quiet=True)
        folder = Path(t.attempts[-1]["task_dir"])
        ended = pool.ledger.task("keep7", "made")["ended"]
        assert apply_retention(pool.ledger, now=ended + 6.9 * 86400) == 0
        assert (folder / "wd" / "out.txt").exists()
        assert apply_retention(pool.ledger, now=ended + 7 * 86400 + 1) == 1
        assert not folder.exists()
        assert t.attempts[-1]["task_dir"] is None


def test_prune_after_a_2000_task_job_shrinks_the_ledger_file(home):
    ledger = Ledger(home / "prune.sqlite")
    with bnb.Pool("big", dedicated=2, task_slots_per_node=2, ledger=ledger) as pool:
        job = pool.job("big")
        job.add_tasks([bnb.TaskSpec(f"t{i}", "true") for i in range(2000)])
        result = job.wait(timeout=300, quiet=True)
        assert result.counts == {"succeeded": 2000}, result
    before = _ledger_bytes(ledger.path)
    assert bnb.prune(older_than=0, ledger=ledger) == ["big"]
    after = _ledger_bytes(ledger.path)
    assert after < before / 4, (before, after)
    assert bnb.jobs(ledger) == []


def test_prune_keeps_the_last_n_finished_jobs(home):
    ledger = Ledger(home / "keep.sqlite")
    with bnb.Pool("lastn", dedicated=1, ledger=ledger) as pool:
        for name in ("first", "second", "third"):
            job = pool.job(name)
            job.add_task("t", "true")
            job.wait(timeout=60, quiet=True)
    assert bnb.prune(older_than=None, ledger=ledger, keep_last=2, dry_run=True) == ["first"]
    assert bnb.prune(older_than=None, ledger=ledger, keep_last=2) == ["first"]
    assert [j["id"] for j in bnb.jobs(ledger)] == ["second", "third"]
    assert bnb.prune(older_than="7d", ledger=ledger, keep_last=0) == []      # none old enough


def test_prune_removes_stored_arguments_no_task_uses_any_more(home):
    ledger = Ledger(home / "args.sqlite")
    with bnb.Pool("argsgc", dedicated=1, ledger=ledger) as pool:
        for name in ("gone", "stays"):
            job = pool.job(name)
            job.submit(len, os.urandom(2**20) if name == "gone" else os.urandom(2**20 + 1), task_id="n")
            job.wait(timeout=120, quiet=True)
    stored = home / "results" / ".args"
    files = sorted(stored.glob("*.pkl"))
    assert len(files) == 2
    for f in files:            # older than the hour a file being added may wait for its task's row
        os.utime(f, (f.stat().st_atime - 7200, f.stat().st_mtime - 7200))
    assert bnb.prune(older_than=None, ledger=ledger, keep_last=1) == ["gone"]
    left = sorted(stored.glob("*.pkl"))
    assert len(left) == 1 and left[0] in files
    assert bnb.Job.attach("stays", ledger=ledger).task("n").result() == 2**20 + 1
