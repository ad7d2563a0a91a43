"""``t.subtasks()`` read back from a ledger alone: the records the dispatcher wrote,
and no instance shown running once its attempt is over (its driver stopped)."""

from __future__ import annotations

from types import SimpleNamespace

from batchnb.engine.ledger import Batch, Ledger
from batchnb.task import Task


def _ledger(tmp_path, attempt_state: str) -> Ledger:
    led = Ledger(tmp_path / "ledger.sqlite")
    led.create_job("j", {"id": "j"}, pool="local", now=0.0)
    led.add_tasks("j", [("sim", 0, "{}", "running")], now=0.0)
    batch = Batch()
    batch.attempt("j", "sim", 1, node="dedicated-0", state=attempt_state, dispatched=1.0)
    for i, node in enumerate(["dedicated-0", "dedicated-1"]):
        batch.event(1.0, "subtask", "j", "sim", "running",
                    {"attempt": 1, "instance": i, "node": node, "host": "127.0.0.1", "state": "running"})
    batch.event(2.0, "subtask", "j", "sim", "succeeded",
                {"attempt": 1, "instance": 1, "node": "dedicated-1", "host": "127.0.0.1", "state": "succeeded",
                 "exit_code": 0, "coordination_exit_code": 0, "stdout": "ready\n"})
    led.commit(batch)
    return led


def test_subtasks_are_the_last_record_of_each_instance(tmp_path):
    t = Task(SimpleNamespace(ledger=_ledger(tmp_path, "running"), id="j"), "sim")
    subs = t.subtasks()
    assert [(s.instance, s.node, s.state) for s in subs] == [(0, "dedicated-0", "running"),
                                                             (1, "dedicated-1", "succeeded")]
    assert subs[1].stdout == "ready\n" and subs[1].coordination_exit_code == 0 and subs[0].primary


def test_an_instance_of_an_interrupted_attempt_is_not_shown_running(tmp_path):
    t = Task(SimpleNamespace(ledger=_ledger(tmp_path, "interrupted"), id="j"), "sim")
    assert [s.state for s in t.subtasks()] == ["interrupted", "succeeded"]
