"""The ledger's schedule records: made by a migration step in older files, kept by salvage, one per name."""

from __future__ import annotations

import sqlite3

import pytest

import batchnb as bnb
from batchnb.engine import ledger_repair
from batchnb.engine.ledger import Ledger


def _with_a_schedule(path) -> Ledger:
    led = Ledger(path)
    led.create_schedule("nightly", "local", {"id": "nightly", "every": 86400.0}, b"builder", now=1.0, next_due=1.0)
    led.schedule_run("nightly", due=1.0, now=1.5, outcome="started", job_id="nightly-job-1")
    led.schedule_run("nightly", due=86401.0, now=86500.0, outcome="skipped", reason="start window", next_due=172801.0)
    return led


def test_a_ledger_of_the_previous_version_gets_the_schedule_tables(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).create_job("j", {"id": "j"}, pool="local", now=0.0)
    con = sqlite3.connect(path)
    con.execute("DROP TABLE schedules")
    con.execute("DROP TABLE schedule_runs")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    led = _with_a_schedule(path)
    assert led.job("j")["state"] == "active"
    assert [r["outcome"] for r in led.schedule_runs("nightly")] == ["started", "skipped"]


def test_salvage_keeps_the_schedules_and_their_runs(tmp_path):
    _with_a_schedule(tmp_path / "ledger.sqlite")
    report = ledger_repair.salvage(tmp_path / "ledger.sqlite", tmp_path / "salvaged.sqlite")
    assert report["schedules"] == {"kept": 1, "lost": 0} and report["schedule_runs"] == {"kept": 2, "lost": 0}
    salvaged = Ledger(tmp_path / "salvaged.sqlite")
    row = salvaged.schedule("NIGHTLY")                    # names are matched as job ids are: any case
    assert (row["builder"], row["started"], row["next_due"]) == (b"builder", 1, 172801.0)


def test_a_name_is_one_schedule_and_its_job_numbers_go_on_after_jobs_named_like_them(tmp_path):
    led = _with_a_schedule(tmp_path / "ledger.sqlite")
    with pytest.raises(bnb.SpecError, match="schedule name: 'Nightly'.*exists.*pool 'local'"):
        led.create_schedule("Nightly", "other", {"id": "Nightly"}, None, now=2.0, next_due=2.0)
    led.create_job("weekly-job-7", {"id": "weekly-job-7"}, pool="local", now=0.0)
    led.create_schedule("weekly", "local", {"id": "weekly"}, None, now=2.0, next_due=2.0)
    assert led.schedule("weekly")["started"] == 7
    led.delete_schedule("nightly")
    assert led.schedule("nightly") is None and led.schedule_runs("nightly") == []
    assert [s["name"] for s in led.schedules("local")] == ["weekly"]
