"""The ledger: batches, leases, durability across connections and processes."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from batchnb.errors import LedgerError
from batchnb.engine.ledger import Batch, Ledger


def test_batch_is_one_transaction(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    ledger.add_tasks("j", [("a", 0, "{}", "active"), ("b", 1, "{}", "pending")], now=1.0)
    b = Batch()
    b.task("j", "a", state="running", node="n1")
    b.attempt("j", "a", 1, node="n1", state="running", dispatched=2.0)
    b.task("j", "nope", bogus=1) if False else None
    with pytest.raises(LedgerError):
        b.task("j", "a", bogus=1)
    ledger.commit(b)
    assert ledger.task("j", "A")["state"] == "running"  # ids are case-insensitive
    assert ledger.attempts("j", "a")[0]["dispatched"] == 2.0
    assert ledger.task_counts("j") == {"running": 1, "pending": 1}
    assert [e["state"] for e in ledger.events("j")] == ["active", "active", "pending"]


def test_a_failed_batch_writes_nothing(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    ledger.add_tasks("j", [("a", 0, "{}", "active")], now=1.0)
    b = Batch()
    b.task("j", "a", state="running")
    b.statements.append(("INSERT INTO nowhere VALUES (1)", ()))
    with pytest.raises(LedgerError):
        ledger.commit(b)
    assert ledger.task("j", "a")["state"] == "active"


def test_leases(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    assert ledger.acquire_lease("j", "me", ttl=10, now=100) is None
    assert ledger.acquire_lease("j", "you", ttl=10, now=105) == "me"
    assert ledger.acquire_lease("j", "you", ttl=10, now=111) is None  # expired: taken over
    ledger.release_lease("j", "me")  # not mine any more: no effect
    assert ledger.acquire_lease("j", "me", ttl=10, now=112) == "you"
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.acquire_lease("ghost", "me", ttl=10)


def _writer(path, n):
    led = Ledger(path)
    for i in range(n):
        b = Batch()
        b.event(time.time(), "note", "j", f"t{i}")
        led.commit(b)


def test_two_processes_write_one_ledger(ledger):
    ledger.create_job("j", {"id": "j"}, "p", now=1.0)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(ledger.path), 200)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len([e for e in ledger.events("j") if e["kind"] == "note"]) == 400


def test_wal_mode_and_location(home):
    from batchnb.engine.ledger import default_path
    led = Ledger()
    assert led.path == default_path() and str(led.path).startswith(str(home))
    assert led._con().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_location_from_dask_config(tmp_path, monkeypatch):
    import dask
    from batchnb.engine.ledger import default_path
    monkeypatch.delenv("BATCHNB_HOME", raising=False)
    with dask.config.set({"batchnb.home": str(tmp_path / "cfg-home")}):
        assert default_path() == tmp_path / "cfg-home" / "ledger.sqlite"
    with dask.config.set({"batchnb.ledger": str(tmp_path / "elsewhere.sqlite")}):
        assert Ledger().path == tmp_path / "elsewhere.sqlite"
