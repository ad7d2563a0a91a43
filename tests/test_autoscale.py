"""Tests of batchnb.autoscale: metric history, Targets, and both kinds of policy, without a cluster."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from batchnb.autoscale import CallablePolicy, FormulaPolicy, MetricHistory, Metrics, Targets, make_policy
from batchnb.errors import FormulaError, SpecError
from batchnb.formula import parse

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)


def filled(pending, start=T0, **other):
    """A history with one sample per 30 s; the last sample is at the returned time."""
    h = MetricHistory()
    for i, value in enumerate(pending):
        h.record(start + i * STEP, {"$PendingTasks": value, **{k: v[i] for k, v in other.items()}})
    return h, start + (len(pending) - 1) * STEP


# -- MetricHistory ----------------------------------------------------------------------

def test_history_records_and_copies():
    h = MetricHistory()
    h.record(T0, {"$PendingTasks": 12, "$CPUPercent": 40.5})
    h.record(datetime(2024, 5, 1, 12, 0, 30), {"$PendingTasks": 15})  # naive = UTC
    samples = h.samples()
    assert samples["$PendingTasks"] == [(T0, 12.0), (T0 + STEP, 15.0)]
    assert samples["$CPUPercent"] == [(T0, 40.5)]
    samples["$PendingTasks"].clear()  # a copy: the history is untouched
    assert h.latest("$PendingTasks") == 15.0 and h.latest("$Nothing") is None
    assert h.samples(["$CPUPercent", "$Unknown"]) == {"$CPUPercent": [(T0, 40.5)]}


def test_history_retention_and_out_of_order():
    h = MetricHistory(retention=timedelta(minutes=2))
    for i in range(10):
        h.record(T0 + i * STEP, {"$PendingTasks": i})
    h.record(T0 + 7 * STEP + timedelta(seconds=1), {"$PendingTasks": 70})  # late arrival, kept in order
    times = [t for t, _ in h.samples()["$PendingTasks"]]
    assert times == sorted(times)
    assert times[0] == T0 + 9 * STEP - timedelta(minutes=2)  # exactly two minutes back is kept
    assert [v for _, v in h.samples()["$PendingTasks"]] == [5.0, 6.0, 7.0, 70.0, 8.0, 9.0]


def test_history_is_thread_safe():
    h = MetricHistory()

    def writer(k):
        for i in range(500):
            h.record(T0 + timedelta(milliseconds=i * 4 + k), {"$PendingTasks": i, f"m{k}": i})
            h.samples()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = h.samples()
    assert len(samples["$PendingTasks"]) == 2000
    assert all(len(samples[f"m{k}"]) == 500 for k in range(4))


@pytest.mark.parametrize("now, values, field", [
    ("noon", {"$PendingTasks": 1}, "now"),
    (T0, {"$PendingTasks": "many"}, "metric $PendingTasks"),
    (T0, {"$PendingTasks": float("inf")}, "metric $PendingTasks"),
    (T0, {"$PendingTasks": True}, "metric $PendingTasks"),
    (T0, {"": 1}, "metric name"),
])
def test_history_rejects_bad_samples(now, values, field):
    with pytest.raises(SpecError) as err:
        MetricHistory().record(now, values)
    assert err.value.field == field


def test_history_rejects_bad_retention():
    with pytest.raises(SpecError, match="retention"):
        MetricHistory(retention=timedelta(0))


# -- Targets ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    ({"dedicated": -1, "spot": 0}, "Targets.dedicated"),
    ({"dedicated": 1.5, "spot": 0}, "Targets.dedicated"),
    ({"dedicated": True, "spot": 0}, "Targets.dedicated"),
    ({"dedicated": 0, "spot": "2"}, "Targets.spot"),
    ({"dedicated": 0, "spot": 0, "deallocation": "later"}, "Targets.deallocation"),
])
def test_targets_validation_names_field_and_value(kwargs, field):
    with pytest.raises(SpecError) as err:
        Targets(**kwargs)
    assert err.value.field == field
    assert repr(list(kwargs.values())[["Targets.dedicated", "Targets.spot", "Targets.deallocation"].index(field)]) \
        in str(err.value)


def test_targets_are_frozen_with_azure_default():
    t = Targets(2, 8)
    assert t.deallocation == "requeue"
    with pytest.raises(AttributeError):
        t.dedicated = 3  # type: ignore[misc]
    for option in ("requeue", "terminate", "taskcompletion", "retaineddata"):
        assert Targets(0, 0, option).deallocation == option


# -- make_policy --------------------------------------------------------------------------

def test_make_policy_kinds():
    assert isinstance(make_policy("$TargetDedicatedNodes = 1"), FormulaPolicy)
    assert isinstance(make_policy(parse("$TargetDedicatedNodes = 1")), FormulaPolicy)
    assert isinstance(make_policy(lambda m: (1, 0)), CallablePolicy)
    policy = make_policy(lambda m: (1, 0))
    assert make_policy(policy) is policy
    for bad in (42, None, ["$TargetDedicatedNodes = 1"]):
        with pytest.raises(SpecError) as err:
            make_policy(bad)
        assert err.value.field == "autoscale" and not isinstance(err.value, FormulaError)


def test_bad_formula_fails_at_make_policy():
    with pytest.raises(FormulaError) as err:
        make_policy("$TargetDedicatedNodes = max(0,\n  $PendingTask.GetSample(1))")
    assert (err.value.line, err.value.column) == (2, 3)


# -- FormulaPolicy ------------------------------------------------------------------------

def test_formula_policy_decides_and_truncates():
    formula = """$avg = avg($PendingTasks.GetSample(TimeInterval_Minute * 3, 50));
$TargetDedicatedNodes = min(10, $avg / $TaskSlotsPerNode);
$TargetLowPriorityNodes = $CurrentLowPriorityNodes + 0.9;
$NodeDeallocationOption = taskcompletion;"""
    # the 7 samples of the last 3 minutes (both ends kept): 3 .. 9, average 6; 4 slots -> 1.5 -> 1 node
    h, now = filled(list(range(10)))
    policy = make_policy(formula)
    targets = policy.decide(h, now, {"$CurrentDedicatedNodes": 1, "$CurrentLowPriorityNodes": 2, "$TaskSlotsPerNode": 4})
    assert targets == Targets(1, 2, "taskcompletion")  # 2.9 low-priority truncated to 2, as Azure does
    assert policy.last_results["$avg"] == 6.0


def test_formula_policy_defaults_and_errors():
    h, now = filled([5])
    keep = make_policy("x = 1")  # assigns no target: the pool keeps its current size
    assert keep.decide(h, now, {"$CurrentDedicatedNodes": 3, "$CurrentLowPriorityNodes": 1}) == Targets(3, 1)
    # not enough samples for the 90 % asked: the error propagates (Azure leaves the pool as it is)
    strict = make_policy("$TargetDedicatedNodes = avg($PendingTasks.GetSample(TimeInterval_Minute * 10, 90))")
    with pytest.raises(FormulaError, match="90% are required"):
        strict.decide(h, now, {})
    # unknown keys of `current` (the pool's own bookkeeping) are not formula variables
    assert keep.decide(h, now, {"workers": 3, "$CurrentDedicatedNodes": 2}) == Targets(2, 0)


def test_formula_policy_sample_period():
    h = MetricHistory()
    for i in range(10):
        h.record(T0 + i * timedelta(minutes=1), {"$PendingTasks": 4})
    now = T0 + timedelta(minutes=9)
    text = "$TargetDedicatedNodes = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 9) / 10"
    # one sample a minute: 10 samples in a 9-minute window against 18 expected at 30 s -> 55 %
    assert make_policy(text).decide(h, now, {}).dedicated == 5
    assert make_policy(text, sample_period=timedelta(minutes=1)).decide(h, now, {}).dedicated == 10


# -- CallablePolicy and Metrics -------------------------------------------------------------

def test_callable_policy_return_forms():
    h, now = filled([3, 7], **{"$CPUPercent": [10.0, 20.0]})
    current = {"$CurrentDedicatedNodes": 2, "$CurrentLowPriorityNodes": 5}
    decide = lambda fn: make_policy(fn).decide(h, now, current)  # noqa: E731
    assert decide(lambda m: Targets(1, 2, "terminate")) == Targets(1, 2, "terminate")
    assert decide(lambda m: (m.pending_tasks, 0)) == Targets(7, 0)
    assert decide(lambda m: [1, 2, "TaskCompletion"]) == Targets(1, 2, "taskcompletion")
    assert decide(lambda m: {"spot": 4}) == Targets(2, 4)  # missing dedicated keeps the current count
    assert decide(lambda m: {"$TargetDedicatedNodes": 3, "$NodeDeallocationOption": "retaineddata"}) == \
        Targets(3, 5, "retaineddata")
    assert decide(lambda m: (-3, 2.9)) == Targets(0, 2)  # negative clamps to 0, fractions truncate


def named_policy(m):
    return "ten nodes"


@pytest.mark.parametrize("fn, problem", [
    (named_policy, "expected Targets, a dict or a (dedicated, spot) tuple"),
    (lambda m: (1,), "expected Targets"),
    (lambda m: (1, 2, 3, 4), "expected Targets"),
    (lambda m: {"nodes": 3}, "unknown key 'nodes'"),
    (lambda m: (float("nan"), 0), "dedicated must be a finite number"),
    (lambda m: (1, None), "spot must be a finite number"),
    (lambda m: (True, 0), "dedicated must be a finite number"),
    (lambda m: (1, 1, "later"), "deallocation must be one of"),
])
def test_callable_policy_bad_returns_name_the_policy(fn, problem):
    h, now = filled([1])
    with pytest.raises(SpecError) as err:
        make_policy(fn).decide(h, now, {})
    assert problem in str(err.value)
    assert "return value of autoscale policy" in err.value.field
    if fn is named_policy:
        assert "named_policy" in err.value.field and "'ten nodes'" in str(err.value)


def test_callable_policy_errors_of_the_callable_propagate():
    def broken(m):
        raise KeyError("oops")

    with pytest.raises(KeyError):
        make_policy(broken).decide(*filled([1]), {})


def test_metrics_view():
    h, now = filled([3, 7, 9], **{"$CPUPercent": [10.0, 20.0, 30.0], "custom": [1.0, 2.0, 3.0]})
    seen = {}

    def spy(m: Metrics):
        seen["m"] = m
        return (0, 0)

    make_policy(spy).decide(h, now, {"$CurrentDedicatedNodes": 2, "$CurrentLowPriorityNodes": 1})
    m = seen["m"]
    assert (m.pending_tasks, m.cpu_percent, m["$PendingTasks"], m["pending_tasks"]) == (9.0, 30.0, 9.0, 9.0)
    assert (m.current_dedicated_nodes, m.current_low_priority_nodes, m.current_spot_nodes) == (2, 1, 1)
    assert m.task_slots_per_node == 1.0 and m.active_tasks == 0.0  # nothing recorded: Azure-like defaults
    assert m["custom"] == 3.0 and m.now == now
    assert m.samples["$PendingTasks"] == ((now - 2 * STEP, 3.0), (now - STEP, 7.0), (now, 9.0))
    assert m.values("pending_tasks") == [3.0, 7.0, 9.0]
    assert m.values("$PendingTasks", last=timedelta(seconds=30)) == [7.0, 9.0]
    assert "pending_tasks" in dir(m) and "Metrics" in repr(m)
    with pytest.raises(AttributeError):
        m.pending_tasks = 1
    with pytest.raises(TypeError):
        m.samples["$PendingTasks"] = ()  # type: ignore[index]
    with pytest.raises(AttributeError, match="known names"):
        m.pending
    with pytest.raises(KeyError):
        m["nothing"]


def test_docstring_examples():
    import doctest

    import batchnb.autoscale

    assert doctest.testmod(batchnb.autoscale).failed == 0
