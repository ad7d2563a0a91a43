"""The per-task hooks reach every extension that has them, and only those."""

from __future__ import annotations

from batchnb.engine.extension import EngineHandle, PoolExtension


class Quiet(PoolExtension):
    """Has none of the per-task hooks."""


class Counting(PoolExtension):
    def __init__(self, engine, allow: bool = True):
        super().__init__(engine)
        self.calls, self.allow = [], allow

    def task_started(self, job, tr, node, now):
        self.calls.append(("started", tr))

    def task_ended(self, job, tr, now):
        self.calls.append(("ended", tr))

    def may_dispatch(self, job, tr, now):
        self.calls.append(("may", tr))
        return self.allow


def _engine() -> EngineHandle:
    return EngineHandle(name="p", spec=None, ledger=None, bus=None, client=None, backend=None, owner="me",
                        lease_ttl=1.0, node_root="", storage_options={}, results_url="")


def test_each_hook_reaches_the_extensions_that_have_it_in_order_and_a_refusal_stops_the_rest():
    engine = _engine()
    first, quiet, second = Counting(engine), Quiet(engine), Counting(engine, allow=False)
    late = Counting(engine)
    engine.extensions = [first, quiet, second, late]
    engine.task_started("job", "t1", "node", 1.0)
    engine.task_ended("job", "t1", 2.0)
    assert engine.may_dispatch("job", "t2", 3.0) is False
    assert first.calls == second.calls == [("started", "t1"), ("ended", "t1"), ("may", "t2")]
    assert late.calls == [("started", "t1"), ("ended", "t1")]    # after a refusal, not asked
    assert engine._hooked["task_started"] == [first.task_started, second.task_started, late.task_started]


def test_a_hook_set_on_an_extension_instance_is_called_and_no_extension_allows_dispatch():
    engine = _engine()
    quiet = Quiet(engine)
    seen = []
    quiet.task_ended = lambda job, tr, now: seen.append(tr)
    engine.extensions = [quiet]
    engine.task_ended("job", "t9", 1.0)
    assert seen == ["t9"] and engine.may_dispatch("job", "t9", 1.0) is True
    engine.extensions = []
    engine.task_started("job", "t9", "node", 1.0)
    assert seen == ["t9"] and engine.may_dispatch("job", "t9", 1.0) is True
