"""Step 7 of the ledger's schema: the task_arrays table a job.map writes its one record to."""

from __future__ import annotations

import sqlite3

from batchnb.engine.ledger import Ledger
from batchnb.engine.schema import SCHEMA_VERSION


def _tables(path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def test_a_ledger_of_version_6_gains_the_arrays_table_when_opened(tmp_path):
    path = tmp_path / "v6.sqlite"
    Ledger(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("DROP TABLE task_arrays")           # as a version-6 file that never ran a map
    con.execute("PRAGMA user_version = 6")
    con.close()
    led = Ledger(path)
    assert "task_arrays" in _tables(path) and SCHEMA_VERSION >= 7
    assert led.arrays_of("j") == [] and led.array("j", "a") is None
    led.put_array("j", "a", '{"call": ""}')
    assert led.arrays_of("j") == ["a"] and led.array("j", "a") == '{"call": ""}'


def test_a_new_ledger_has_the_arrays_table_before_any_map(tmp_path):
    Ledger(tmp_path / "new.sqlite")
    assert "task_arrays" in _tables(tmp_path / "new.sqlite")
