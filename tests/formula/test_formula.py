"""Tests of batchnb.formula: Azure's example formulas, the operator and function
tables, sample methods, error positions, and property tests that nothing but
FormulaError ever escapes.

Expected numbers are worked out by hand in the comments, never copied from
the evaluator's output.
"""

from __future__ import annotations

import math
import random
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchnb.errors import FormulaError, SpecError
from batchnb.formula import TimeInterval, evaluate, format_results, parse

UTC = timezone.utc
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a Wednesday
STEP = timedelta(seconds=30)


def series(values, step=STEP, end=NOW - STEP):
    """Samples oldest first; the newest is at ``end`` (30 s before NOW by default)."""
    n = len(values)
    return [(end - step * (n - 1 - i), float(v)) for i, v in enumerate(values)]


def run(text, **metrics_and_vars):
    variables = metrics_and_vars.pop("variables", None)
    now = metrics_and_vars.pop("now", NOW)
    return evaluate(text, metrics=metrics_and_vars.pop("metrics", None), now=now, variables=variables,
                    **metrics_and_vars)


def value(expr, **kw):
    return run(f"x = {expr};", **kw)["x"]


# -- Azure's documented formulas ---------------------------------------------------------

PENDING_SAMPLE = """startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;
"""


def test_doc_pending_tasks_sample_with_all_samples():
    # 180 s / 30 s = 6 expected samples, all 6 present -> 100 % -> avg(4..14 step 2) = 9
    out = run(PENDING_SAMPLE, metrics={"$PendingTasks": series([4, 6, 8, 10, 12, 14])})
    assert out["pendingTaskSamplePercent"] == 100.0
    assert out["$TargetDedicatedNodes"] == 9.0
    assert out["$NodeDeallocationOption"] == "taskcompletion"
    assert out["startingNumberOfVMs"] == 1.0 and out["maxNumberofVMs"] == 25.0


def test_doc_pending_tasks_sample_caps_and_falls_back():
    # avg(30, 40, 50, 60, 70, 80) = 55 -> capped at 25 VMs
    assert run(PENDING_SAMPLE, metrics={"$PendingTasks": series([30, 40, 50, 60, 70, 80])})["$TargetDedicatedNodes"] == 25.0
    # 4 of 6 samples = 66.7 % < 70 -> startingNumberOfVMs (the techcommunity explanation)
    out = run(PENDING_SAMPLE, metrics={"$PendingTasks": series([10, 10, 10, 10])})
    assert out["pendingTaskSamplePercent"] == pytest.approx(200 / 3)
    assert out["$TargetDedicatedNodes"] == 1.0
    # 5 of 6 = 83 % -> avg(2, 4, 6, 8, 10) = 6
    assert run(PENDING_SAMPLE, metrics={"$PendingTasks": series([2, 4, 6, 8, 10])})["$TargetDedicatedNodes"] == 6.0


def test_doc_preempted_nodes():
    text = """maxNumberofVMs = 25;
$TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
$TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);
$NodeDeallocationOption = taskcompletion;"""
    # min over the list (25, 2, 3, 3, 4, 4, 5) = 2 dedicated; 25 - 2 = 23 low-priority
    out = run(text, metrics={"$PreemptedNodeCount": series([2, 3, 3, 4, 4, 5])})
    assert (out["$TargetDedicatedNodes"], out["$TargetLowPriorityNodes"]) == (2.0, 23.0)


CPU = """$totalDedicatedNodes =
    (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ?
    ($CurrentDedicatedNodes * 1.1) : $CurrentDedicatedNodes;
$totalDedicatedNodes =
    (avg($CPUPercent.GetSample(TimeInterval_Minute * 60)) < 0.2) ?
    ($CurrentDedicatedNodes * 0.9) : $totalDedicatedNodes;
$TargetDedicatedNodes = min(400, $totalDedicatedNodes)"""


@pytest.mark.parametrize("recent, older, current, expected", [
    (0.9, 0.8, 10, 11.0),    # min of the last 10 min 0.9 > 0.7 -> 10 * 1.1; hour avg 0.8 -> keep
    (0.1, 0.1, 10, 9.0),     # not busy; hour avg 0.1 < 0.2 -> 10 * 0.9
    # 20 recent samples at 0.9, 100 older at 0.05: hour avg (18 + 5) / 120 = 0.19 < 0.2 -> 9
    (0.9, 0.05, 10, 9.0),
    (0.5, 0.5, 500, 400.0),  # 500 nodes, no change, capped at 400
])
def test_doc_cpu_formula(recent, older, current, expected):
    cpu = series([older] * 100 + [recent] * 20)  # 120 samples = one hour, 20 in the last 10 min
    out = run(CPU, metrics={"$CPUPercent": cpu}, variables={"$CurrentDedicatedNodes": current})
    assert out["$TargetDedicatedNodes"] == pytest.approx(expected)


TIME_OF_DAY = """$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
$NodeDeallocationOption = taskcompletion;"""


@pytest.mark.parametrize("when, expected", [
    (datetime(2024, 5, 1, 12, 0), 20.0),    # Wednesday noon
    (datetime(2024, 5, 1, 19, 0), 10.0),    # Wednesday evening
    (datetime(2024, 5, 4, 10, 0), 10.0),    # Saturday
    (datetime(2024, 5, 5, 10, 0), 10.0),    # Sunday (weekday 7)
    (datetime(2024, 5, 6, 8, 0), 20.0),     # Monday 08:00 is working time
    (datetime(2024, 5, 3, 17, 59), 20.0),   # Friday 17:59
])
def test_doc_time_of_day(when, expected):
    out = run(TIME_OF_DAY, now=when)
    assert out["$TargetDedicatedNodes"] == expected
    assert out["$curTime"] == when.replace(tzinfo=UTC)


def test_doc_time_zone_shift():
    # 13:00 UTC is 07:00 in MDT (UTC-6): before working hours
    text = TIME_OF_DAY.replace("$curTime = time();", "$curTime = time() + (-6 * TimeInterval_Hour);")
    assert run(text, now=datetime(2024, 5, 1, 13, 0))["$TargetDedicatedNodes"] == 10.0
    assert run(text, now=datetime(2024, 5, 1, 15, 0))["$TargetDedicatedNodes"] == 20.0


TASKS = """// Get pending tasks for the past 15 minutes.
$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
// otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise
// half of current dedicated.
$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);
// The pool size is capped at 20, if target VM value is more than that, set it
// to 20. This value should be adjusted according to your use case.
$TargetDedicatedNodes = max(0, min($targetVMs, 20));
// Set node deallocation mode - let running tasks finish before removing a node
$NodeDeallocationOption = taskcompletion;"""


def test_doc_task_based_formula():
    # 30 samples in 15 min (100 %), falling 30 .. 1: latest 1, average 15.5 -> 15.5
    out = run(TASKS, metrics={"$PendingTasks": series(range(30, 0, -1))})
    assert out["$samples"] == 100.0
    assert out["$tasks"] == 15.5 and out["$TargetDedicatedNodes"] == 15.5
    # rising 1 .. 30: max(latest 30, avg 15.5) = 30, capped at 20
    assert run(TASKS, metrics={"$PendingTasks": series(range(1, 31))})["$TargetDedicatedNodes"] == 20.0
    # 10 samples of 30 = 33 % < 70 -> the last sample alone: 7
    out = run(TASKS, metrics={"$PendingTasks": series([5] * 9 + [7])})
    assert out["$samples"] == pytest.approx(100 / 3) and out["$TargetDedicatedNodes"] == 7.0
    # no pending tasks: half the current target (from $CurrentDedicatedNodes, else the given target)
    zeros = {"$PendingTasks": series([0] * 30)}
    assert run(TASKS, metrics=zeros, variables={"$CurrentDedicatedNodes": 6})["$TargetDedicatedNodes"] == 3.0
    both = {"$CurrentDedicatedNodes": 6, "$TargetDedicatedNodes": 8}
    assert run(TASKS, metrics=zeros, variables=both)["$TargetDedicatedNodes"] == 4.0
    # a brand-new pool: no samples at all -> GetSample(1) is empty, max(0) = 0
    assert run(TASKS)["$TargetDedicatedNodes"] == 0.0


def test_doc_parallel_tasks():
    text = """$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1),avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
$cores = $TargetDedicatedNodes * 4;
$extraVMs = (($tasks - $cores) + 3) / 4;
$targetVMs = ($TargetDedicatedNodes + $extraVMs);
$TargetDedicatedNodes = max(0,min($targetVMs,3));
$NodeDeallocationOption = taskcompletion;"""
    # 6 active tasks, 1 node of 4 slots: extra (6 - 4 + 3) / 4 = 1.25 -> 2.25 nodes
    out = run(text, metrics={"$ActiveTasks": series([6] * 30)}, variables={"$CurrentDedicatedNodes": 1})
    assert out["$TargetDedicatedNodes"] == 2.25


INITIAL = """$TargetDedicatedNodes = 4;
lifespan         = time() - time("{start}");
span             = TimeInterval_Minute * 60;
startup          = TimeInterval_Minute * 10;
ratio            = 50;
$TargetDedicatedNodes = (lifespan > startup ? (max($RunningTasks.GetSample(span, ratio), $ActiveTasks.GetSample(span, ratio)) == 0 ? 0 : $TargetDedicatedNodes) : 4);"""


def test_doc_initial_pool_size():
    young = INITIAL.format(start="Wed, 01 May 2024 11:55:00 GMT")  # 5 min old < 10 min startup
    assert run(young)["$TargetDedicatedNodes"] == 4.0
    old = INITIAL.format(start="Wed, 01 May 2024 10:00:00 GMT")
    idle = {"$RunningTasks": series([0] * 120), "$ActiveTasks": series([0] * 120)}
    assert run(old, metrics=idle)["$TargetDedicatedNodes"] == 0.0
    busy = {"$RunningTasks": series([0] * 119 + [2]), "$ActiveTasks": series([0] * 120)}
    assert run(old, metrics=busy)["$TargetDedicatedNodes"] == 4.0
    # 30 of 120 samples = 25 % < 50 %: Azure fails the evaluation, at the GetSample call
    sparse = {"$RunningTasks": series([0] * 30), "$ActiveTasks": series([0] * 120)}
    with pytest.raises(FormulaError) as err:
        run(old, metrics=sparse)
    line6 = old.splitlines()[5]
    assert (err.value.line, err.value.column) == (6, line6.index("GetSample") + 1)
    assert "25%" in str(err.value) and "50%" in str(err.value)


def test_batch_shipyard_style_formula():
    text = """sli = TimeInterval_Second * 180;
lastsample = val($PendingTasks.GetSample(1), 0);
samplevecavg = avg($PendingTasks.GetSample(sli));
reqVMs = lastsample < samplevecavg ? avg(lastsample, samplevecavg) : max(lastsample, samplevecavg);
rebalance = 0 == 1;
$TargetDedicatedNodes = max(0, reqVMs / 2);"""
    # last 2, avg(8, 6, 4, 2) over the 4 samples of 180 s = 5 -> avg(2, 5) = 3.5 -> / 2
    out = run(text, metrics={"$PendingTasks": series([8, 6, 4, 2])})
    assert out["reqVMs"] == 3.5 and out["rebalance"] == 0.0 and out["$TargetDedicatedNodes"] == 1.75


# -- operators and types -----------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("1 + 2", 3.0), ("7 - 2", 5.0), ("3 * 4", 12.0), ("9 / 2", 4.5),
    ("1 + 2 * 3", 7.0), ("(1 + 2) * 3", 9.0), ("2 - 3 - 4", -5.0), ("16 / 4 / 2", 2.0),
    ("-2 * 3", -6.0), ("- -2", 2.0), ("!0", 1.0), ("!5", 0.0), ("!0 + 1", 2.0), ("+4", 4.0),
    ("1 < 2", 1.0), ("2 <= 2", 1.0), ("1 > 2", 0.0), ("2 >= 3", 0.0), ("2 == 2", 1.0), ("2 != 2", 0.0),
    ("1 < 2 == 1", 1.0), ("1 || 0 && 0", 1.0), ("(1 || 0) && 0", 0.0), ("0 || 0", 0.0), ("3 && 4", 1.0),
    ('"abc" < "abd"', 1.0), ('"b" == "b"', 1.0), ('"a" != "a"', 0.0),
    ("1 ? 2 : 3", 2.0), ("0 ? 2 : 3", 3.0), ("0 ? 1 : 0 ? 2 : 3", 3.0), ("1.5e2", 150.0), (".5", 0.5),
    # double * timeinterval, timeinterval * double, / double, + and - between intervals
    ("2 * TimeInterval_Minute == TimeInterval_Second * 120", 1.0),
    ("TimeInterval_Hour / 4 == TimeInterval_Minute * 15", 1.0),
    ("TimeInterval_Minute + TimeInterval_Second * 30 == TimeInterval_Second * 90", 1.0),
    ("TimeInterval_Day - TimeInterval_Hour == TimeInterval_Hour * 23", 1.0),
    ("-TimeInterval_Minute < TimeInterval_Zero", 1.0),
    ("TimeInterval_100ns * 10 == TimeInterval_Microsecond", 1.0),
    ("TimeInterval_Microsecond * 1000 == TimeInterval_Millisecond", 1.0),
    ("TimeInterval_Week == TimeInterval_Day * 7", 1.0),
    ("TimeInterval_Year == TimeInterval_Day * 365", 1.0),
    # timestamp + timeinterval (both orders), timestamp - timestamp, comparisons
    ('time("2024-05-01T00:00:00Z") + TimeInterval_Day == time("2024-05-02T00:00:00Z")', 1.0),
    ('TimeInterval_Hour + time("2024-05-01T00:00:00Z") == time("2024-05-01T01:00:00Z")', 1.0),
    ('time("2024-05-01T02:00:00Z") - time("2024-05-01T00:00:00Z") == TimeInterval_Hour * 2', 1.0),
    ('time("2024-05-01") < time("2024-05-02")', 1.0),
    ('time("2024-05-01T10:00:00+02:00") == time("Wed, 01 May 2024 08:00:00 GMT")', 1.0),
    ('time("2024") == time("2024-01-01T00:00:00Z")', 1.0),
    ('time("2024-05").month', 5.0),
])
def test_operator_table(expr, expected):
    assert value(expr) == expected


def test_timestamp_members_and_now():
    out = run('t = time("2024-05-05T13:04:05Z"); y = t.year; mo = t.month; d = t.day; w = t.weekday;'
              "h = t.hour; mi = t.minute; s = t.second; n = time();")
    assert [out[k] for k in ("y", "mo", "d", "w", "h", "mi", "s")] == [2024, 5, 5, 7, 13, 4, 5]
    assert out["n"] == NOW
    assert isinstance(out["t"], datetime) and out["t"].tzinfo is not None


def test_vector_arithmetic():
    m = {"$PendingTasks": series([1, 2, 3])}
    assert value("$PendingTasks.GetSample(3) * 2", metrics=m) == (2.0, 4.0, 6.0)
    assert value("2 * $PendingTasks.GetSample(3)", metrics=m) == (2.0, 4.0, 6.0)
    assert value("$PendingTasks.GetSample(3) - 1", metrics=m) == (0.0, 1.0, 2.0)
    assert value("$PendingTasks.GetSample(3) / $PendingTasks.GetSample(3)", metrics=m) == (1.0, 1.0, 1.0)
    assert value("-$PendingTasks.GetSample(2)", metrics=m) == (-2.0, -3.0)
    with pytest.raises(FormulaError, match="equal length"):
        value("$PendingTasks.GetSample(3) + $PendingTasks.GetSample(2)", metrics=m)


@pytest.mark.parametrize("expr, message", [
    ('"a" + 1', "not defined between a string and a double"),
    ("time() + 1", "not defined between a timestamp and a double"),
    ("time() - TimeInterval_Hour", "not defined between a timestamp and a timeinterval"),  # only + in Azure's table
    ("TimeInterval_Hour * TimeInterval_Hour", "between a timeinterval and a timeinterval"),
    ("TimeInterval_Hour / TimeInterval_Minute", "between a timeinterval and a timeinterval"),
    ('1 < "a"', "cannot compare a double with a string"),
    ("TimeInterval_Hour == 1", "cannot compare"),
    ('!"a"', "'!' applies to a double"),
    ('-"a"', "'-' applies to"),
    ('"a" ? 1 : 2', "must be a double, not a string"),
    ('"a" && 1', "'&&' applies to doubles"),
    ('1 || 0 ? 1 : "x" < 1', None),  # no error: only the chosen branch runs
    ("1 / 0", "division by zero"),
    ("TimeInterval_Hour / 0", "division by zero"),
    ("1e308 * 10", "too large"),
    ("TimeInterval_Year * 1e300", "too long"),
    ('time("9999-12-31T00:00:00Z") + TimeInterval_Week', "out of range"),
    ("time().weekday.hour", "applies to a timestamp"),
])
def test_type_and_arithmetic_errors(expr, message):
    if message is None:
        assert value(expr) == 1.0
        return
    with pytest.raises(FormulaError, match=message):
        value(expr)


def test_short_circuit_protects_the_right_side():
    assert value("0 && 1 / 0") == 0.0
    assert value("1 || 1 / 0") == 1.0


# -- functions ---------------------------------------------------------------------------

V123 = {"$PendingTasks": series([1, 2, 3])}
V1_10 = {"$CPUPercent": series([7, 3, 10, 1, 5, 9, 2, 8, 4, 6])}


@pytest.mark.parametrize("expr, expected", [
    ("avg(1, 2, 3, 6)", 3.0),
    ("avg($PendingTasks.GetSample(3), 7)", 3.25),        # Azure: avg(v, 7) == avg(1, 2, 3, 7)
    ("len($PendingTasks.GetSample(3), 7)", 4.0),
    ("len($PendingTasks.GetSample(0))", 0.0),
    ("lg(8)", 3.0), ("ln(1)", 0.0), ("log(1000)", pytest.approx(3.0)),
    ("lg($PendingTasks.GetSample(3))", (0.0, 1.0, pytest.approx(math.log2(3)))),
    ("lg(1, 4)", (0.0, 2.0)),
    ("log($PendingTasks.GetSample(1))", (pytest.approx(math.log10(3)),)),
    ("max(1, $PendingTasks.GetSample(3), 2)", 3.0), ("min(4, $PendingTasks.GetSample(3))", 1.0),
    ("norm(3, 4)", 5.0), ("norm($PendingTasks.GetSample(0))", 0.0),
    ("range(1, 5, 3)", 4.0),
    ("std(2, 4, 4, 4, 5, 5, 7, 9)", pytest.approx(math.sqrt(32 / 7))),  # sample std: sum of squares 32, n - 1 = 7
    ("sum(1, 2, $PendingTasks.GetSample(3))", 9.0), ("sum($PendingTasks.GetSample(0))", 0.0),
    ("val($PendingTasks.GetSample(3), 0)", 1.0), ("val($PendingTasks.GetSample(3), 2)", 3.0),
    ("ceil(1.2)", 2.0), ("floor(-1.2)", -2.0), ("round(2.5)", 2.0), ("round(3.5)", 4.0),
    ("ceil($PendingTasks.GetSample(3) / 2)", (1.0, 1.0, 2.0)),
])
def test_functions(expr, expected):
    assert value(expr, metrics=V123) == expected


@pytest.mark.parametrize("p, expected", [(0, 1.0), (10, 1.0), (50, 5.0), (90, 9.0), (95, 10.0), (100, 10.0)])
def test_percentile_is_nearest_rank(p, expected):
    # sorted 1..10; nearest rank ceil(p / 100 * 10)
    assert value(f"percentile($CPUPercent.GetSample(10), {p})", metrics=V1_10) == expected


def test_rand_and_stop():
    a = run("r = rand();", rng=7)["r"]
    assert 0.0 <= a < 1.0 and a == random.Random(7).random()
    out = run("a = 1; $TargetDedicatedNodes = 3; stop(); $TargetDedicatedNodes = 5; b = 2")
    assert out["$TargetDedicatedNodes"] == 3.0 and "b" not in out and out["a"] == 1.0
    assert run("$TargetDedicatedNodes = 0 ? 1 : stop();")["$TargetDedicatedNodes"] == 0.0


@pytest.mark.parametrize("expr, message", [
    ("avg($PendingTasks.GetSample(0))", "empty vector"), ("max($PendingTasks.GetSample(0))", "empty vector"),
    ("std(1)", "at least two"), ("lg(0)", "not defined"), ("ln(-1)", "not defined"),
    ("log($PendingTasks.GetSample(3) - 1)", "not defined"),
    ("val($PendingTasks.GetSample(3), 3)", "outside the vector"), ("val($PendingTasks.GetSample(3), -1)", "outside"),
    ("val(1, 0)", "must be a doubleVec"), ("percentile($PendingTasks.GetSample(3), 101)", "between 0 and 100"),
    ('avg(1, "a")', "argument 2 of avg"), ("sum(time())", "must be a double or a doubleVec"),
    ("time(1)", "takes a string"), ('time("yesterday")', "W3C-DTF"), ('time("2024-13-01")', "W3C-DTF"),
    ("sum(1e308, 1e308)", "too large"), ("std(1e308, -1e308)", "too large"),
])
def test_function_errors(expr, message):
    with pytest.raises(FormulaError, match=message):
        value(expr, metrics=V123)


# -- sample methods ----------------------------------------------------------------------

def test_get_sample_by_count_is_most_recent_oldest_first():
    m = {"$PendingTasks": series([1, 2, 3, 4, 5]) + [(NOW + STEP, 99.0)]}  # a "future" sample is ignored
    assert value("$PendingTasks.GetSample(1)", metrics=m) == (5.0,)
    assert value("$PendingTasks.GetSample(3)", metrics=m) == (3.0, 4.0, 5.0)
    assert value("$PendingTasks.GetSample(100)", metrics=m) == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert value("$PendingTasks.GetSample(0)", metrics=m) == ()
    assert value("$PendingTasks.Count()", metrics=m) == 5.0
    assert value("$PendingTasks", metrics=m) == 5.0  # read as a plain value: the latest sample


def test_get_sample_by_interval_and_window():
    # samples at 30 s .. 600 s ago, values = seconds ago / 30
    m = {"$RunningTasks": [(NOW - STEP * k, float(k)) for k in range(1, 21)]}
    assert value("len($RunningTasks.GetSample(TimeInterval_Minute * 5))", metrics=m) == 10.0
    # Azure's example: look-back from 1 to 6 minutes -> samples 60 s .. 360 s ago: k = 2 .. 12
    assert value("$RunningTasks.GetSample(1 * TimeInterval_Minute, 6 * TimeInterval_Minute)", metrics=m) == \
        tuple(float(k) for k in range(12, 1, -1))
    assert value("$RunningTasks.GetSample(6 * TimeInterval_Minute, 1 * TimeInterval_Minute)", metrics=m) == \
        tuple(float(k) for k in range(12, 1, -1))
    # a timestamp start: since 11:58 -> k = 1 .. 4
    assert value('sum($RunningTasks.GetSample(time("2024-05-01T11:58:00Z")))', metrics=m) == 10.0
    assert value('len($RunningTasks.GetSample(time("2024-05-01T11:58:00Z"), TimeInterval_Zero))', metrics=m) == 4.0


def test_sample_percent_as_in_azure_docs():
    # 10 minutes = 20 expected samples; the last minute is missing -> 18 = 90 %
    m = {"$CPUPercent": [(NOW - STEP * k, 50.0) for k in range(3, 21)]}
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", metrics=m) == 90.0
    assert value("len($CPUPercent.GetSample(TimeInterval_Minute * 10, 80))", metrics=m) == 18.0
    assert value("len($CPUPercent.GetSample(TimeInterval_Minute * 10))", metrics=m) == 18.0
    with pytest.raises(FormulaError, match="only 90% .* 95% are required") as err:
        run("a = 1;\nx = $CPUPercent.GetSample(TimeInterval_Minute * 10, 95);", metrics=m)
    assert (err.value.line, err.value.column) == (2, 17)
    # window form with a percent: 0 .. 2 minutes holds 2 of 4 samples (90 s and 120 s ago)
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Zero, TimeInterval_Minute * 2)", metrics=m) == 50.0
    with pytest.raises(FormulaError, match="50% .* 75% are required"):
        value("$CPUPercent.GetSample(TimeInterval_Zero, TimeInterval_Minute * 2, 75)", metrics=m)
    # the sample period is a parameter: at 60 s, 10 minutes expect 10 samples -> capped at 100 %
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", metrics=m,
                 sample_period=timedelta(seconds=60)) == 100.0
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)") == 0.0


def test_period_count_and_history_begin():
    m = {"$DiskBytes": series([1, 2, 3])}
    assert value("$DiskBytes.GetSamplePeriod() == TimeInterval_Second * 30", metrics=m) == 1.0
    assert value("$DiskBytes.GetSamplePeriod()", metrics=m, sample_period=10) == TimeInterval(100_000_000)
    assert value("$DiskBytes.Count()", metrics=m) == 3.0 and value("$NetworkInBytes.Count()") == 0.0
    assert value("$DiskBytes.HistoryBeginTime()", metrics=m) == NOW - 3 * STEP
    with pytest.raises(FormulaError, match="no samples yet"):
        value("$DiskBytes.HistoryBeginTime()")


@pytest.mark.parametrize("expr, message", [
    ("$CPUPercent.GetSample(-1)", "count of 0 or more"),
    ("$CPUPercent.GetSample(2, 50)", "takes one argument"),
    ("$CPUPercent.GetSample(TimeInterval_Minute, 150)", "between 0 and 100"),
    ('$CPUPercent.GetSample("x")', "timeinterval or a timestamp"),
    ("$CPUPercent.GetSample(TimeInterval_Minute, 1, 50)", "timeinterval or a timestamp"),
    ('$CPUPercent.GetSample(TimeInterval_Minute, TimeInterval_Zero, "x")', "must be a double"),
    ("$CPUPercent.GetSamplePercent(TimeInterval_Year * 20000)", "outside the years"),
])
def test_sample_method_errors(expr, message):
    with pytest.raises(FormulaError, match=message):
        value(expr)


# -- variables ---------------------------------------------------------------------------

def test_settable_defaults_aliases_and_read_only_values():
    out = run("", variables={"$CurrentDedicatedNodes": 3, "$CurrentLowPriorityNodes": 5})
    assert out == {"$TargetDedicatedNodes": 3.0, "$TargetLowPriorityNodes": 5.0, "$NodeDeallocationOption": "requeue"}
    assert run("")["$TargetDedicatedNodes"] == 0.0
    assert run("$TargetDedicated = 5; $TargetLowPriority = 2")["$TargetDedicatedNodes"] == 5.0
    both = run("$TargetDedicatedNodes = 3; $TargetDedicated = 5")  # the full name wins
    assert both["$TargetDedicatedNodes"] == 3.0 and both["$TargetDedicated"] == 5.0
    assert value("$CurrentDedicated + $TaskSlotsPerNode", variables={"$CurrentDedicatedNodes": 2}) == 3.0
    assert value("$PendingTasks", metrics=V123, variables={"$PendingTasks": 9}) == 9.0
    assert run('$NodeDeallocationOption = "RetainedData"')["$NodeDeallocationOption"] == "retaineddata"
    assert run("$NodeDeallocationOption = terminate", variables={"$NodeDeallocationOption": "requeue"}
               )["$NodeDeallocationOption"] == "terminate"
    assert list(run("b = 1; a = 2; b = 3")) == [
        "$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption", "b", "a"]


def test_naive_and_aware_times_agree():
    naive = [(datetime(2024, 5, 1, 11, 59), 4.0)]
    aware = [(datetime(2024, 5, 1, 13, 59, tzinfo=timezone(timedelta(hours=2))), 4.0)]
    for samples in (naive, aware):
        assert value("$PendingTasks.GetSample(TimeInterval_Minute * 2)", metrics={"$PendingTasks": samples},
                     now=datetime(2024, 5, 1, 12, 0)) == (4.0,)


@pytest.mark.parametrize("text, message", [
    ('$TargetDedicatedNodes = "x"', "must be a double"),
    ("$TargetDedicatedNodes = time()", "must be a double"),
    ('$NodeDeallocationOption = "bogus"', "must be one of"),
    ("$NodeDeallocationOption = 1", "must be one of"),
    ("$TargetLowPriorityNodes = 0 - 2", "cannot be negative"),
])
def test_settable_value_errors(text, message):
    with pytest.raises(FormulaError, match=message) as err:
        run(text)
    assert err.value.line == 1


@pytest.mark.parametrize("kwargs, field", [
    ({"metrics": {"$Bogus": []}}, "metrics"),
    ({"metrics": {"$PendingTasks": [(1, 2)]}}, "metrics['$PendingTasks']"),
    ({"metrics": {"$PendingTasks": [(NOW, float("nan"))]}}, "metrics['$PendingTasks']"),
    ({"metrics": {"$PendingTasks": 5}}, "metrics['$PendingTasks']"),
    ({"metrics": [1]}, "metrics"),
    ({"variables": {"x": 1}}, "variables"),
    ({"variables": {"$PendingTasks": "many"}}, "variables['$PendingTasks']"),
    ({"variables": {"$NodeDeallocationOption": "bogus"}}, "variables['$NodeDeallocationOption']"),
    ({"variables": {"$TargetDedicatedNodes": -1}}, "variables['$TargetDedicatedNodes']"),
    ({"now": "noon"}, "now"), ({"sample_period": 0}, "sample_period"), ({"rng": "x"}, "rng"),
])
def test_bad_arguments_are_spec_errors_naming_the_argument(kwargs, field):
    with pytest.raises(SpecError) as err:
        evaluate("x = 1", **kwargs)
    assert not isinstance(err.value, FormulaError) and err.value.field == field


# -- parse errors and positions ----------------------------------------------------------

@pytest.mark.parametrize("text, line, column, message", [
    ("a = 1;\nb = a +\n;", 3, 1, "expected a value, found ';'"),
    ("x = foo(1)", 1, 5, "unknown function 'foo'"),
    ("$CPUPercent = 5", 1, 1, "read-only"),
    ("a=1;\n  $PendingTasks = 3", 2, 3, "read-only"),
    ("TimeInterval_Minute = 3", 1, 1, "constant"),
    ("b = a + 1", 1, 5, "'a' is used before it is assigned"),
    ("a = a + 1", 1, 5, "before it is assigned"),
    ('a = "abc', 1, 5, "string is not closed"),
    ("a = 1 # 2", 1, 7, "unexpected character '#'"),
    ("a = 5 % 2", 1, 7, "'%' is not a formula operator"),
    ("a = 1 b = 2", 1, 7, "expected ';' or a line break"),
    ("x = 1; y = x.GetSample(1)", 1, 14, "sampled system variable"),
    ("x = $CPUPercent.Bogus()", 1, 17, "unknown method 'Bogus'"),
    ("x = $CPUPercent.GetSample()", 1, 17, "GetSample() takes 1 to 3 arguments, not 0"),
    ("x = time().hours", 1, 12, "unknown member 'hours'"),
    ("x = val(1)", 1, 5, "val() takes 2 arguments"),
    ("x = rand(1)", 1, 5, "rand() takes 0 arguments"),
    ("x = avg()", 1, 5, "at least 1 argument"),
    ("$targetDedicatedNodes = 1", 1, 1, "did you mean $TargetDedicatedNodes"),
    ("x = timeinterval_minute", 1, 5, "did you mean TimeInterval_Minute"),
    ("x = (1 + 2", 1, 11, "expected ')'"),
    ("x = 1 ? 2", 1, 10, "expected ':'"),
    ("x = 12abc", 1, 5, "malformed number"),
    ("x = 1e999", 1, 5, "too large"),
    ("x = $", 1, 5, "'$' must be followed"),
    ("x = $1a", 1, 5, "must not start with a digit"),
    ("x = .", 1, 5, "expected a value"),
    ("  // only a comment\n\n   x == 1", 3, 4, "'x' is used before"),
    ("x = \u00e9", 1, 5, "unexpected character"),
    ("x = 1;\n$TargetDedicatedNodes == 5", 2, 1, "did you mean '=' instead of '=='?"),
    ("x = 1; 1 + 2", 1, 8, "a statement must assign a value"),
    ("$NodeDeallocationOption = deleteall", 1, 27,
     "'deleteall' is not a node deallocation option; $NodeDeallocationOption is one of requeue, terminate, "
     "taskcompletion, retaineddata"),
    ("$NodeDeallocationOption = retainedata", 1, 27, "did you mean retaineddata?"),
    ('x = 1;\n$NodeDeallocationOption = "requeu"', 2, 27, "must be one of requeue, terminate, taskcompletion, "
     "retaineddata, not 'requeu'; did you mean requeue?"),
    ("$TargetDedicatedNode = 2", 1, 1, "unknown system variable $TargetDedicatedNode: did you mean "
     "$TargetDedicatedNodes?"),
    ("x = 1\n  $TargetLowPriorityNode = x", 2, 3, "did you mean $TargetLowPriorityNodes?"),
    ("x = $PendingTask.GetSample(1)", 1, 5, "'$PendingTask' is used before it is assigned; did you mean "
     "$PendingTasks?"),
    ("$nodes = 2; x = $node + 1", 1, 17, "did you mean $nodes?"),
])
def test_parse_error_positions(text, line, column, message):
    with pytest.raises(FormulaError) as err:
        parse(text)
    assert (err.value.line, err.value.column) == (line, column), str(err.value)
    assert message in str(err.value)
    assert str(err.value).startswith(f"autoscale formula, line {line}, column {column}: ")


def test_user_variables_near_system_ones_are_left_alone():
    # Only one or two edits away is a typo; a longer name of one's own is not.
    out = run("$TargetDedicatedNodesMax = 3; $totalDedicatedNodes = 2; $TargetDedicatedNodes = "
              "min($TargetDedicatedNodesMax, $totalDedicatedNodes)")
    assert out["$TargetDedicatedNodes"] == 2.0
    assert run("$TargetDedicated = 4")["$TargetDedicatedNodes"] == 4.0      # Azure's alias, not a typo


@pytest.mark.parametrize("kwargs, hint", [
    ({"variables": {"$CurrentDedicatedNode": 1}}, "did you mean $CurrentDedicatedNodes?"),
    ({"metrics": {"$PendingTask": []}}, "did you mean $PendingTasks?"),
])
def test_misspelt_variables_and_metrics_arguments_suggest_the_name(kwargs, hint):
    with pytest.raises(SpecError, match=re.escape(hint)):
        evaluate("x = 1", **kwargs)


def test_runtime_error_position():
    with pytest.raises(FormulaError) as err:
        run("a = 1;\nb = a / (a - 1)")
    assert (err.value.line, err.value.column) == (2, 7) and "division by zero" in str(err.value)


def test_formula_error_is_a_spec_and_value_error():
    with pytest.raises(ValueError):
        parse("x = ")
    err = pytest.raises(FormulaError, parse, "x = ").value
    assert isinstance(err, SpecError) and err.field == "formula" and err.value == "x = "


def test_limits_give_formula_errors_not_recursion_errors():
    assert value("+".join(["1"] * 3000)) == 3000.0  # a long flat chain is fine
    for deep in ("(" * 300 + "1" + ")" * 300, "-" * 300 + "1", "!" * 300 + "1",
                 "1 ? " * 200 + "1" + " : 1" * 200, "max(" * 200 + "1" + ")" * 200):
        with pytest.raises(FormulaError, match="nested too deeply|before"):
            parse("x = " + deep)
    with pytest.raises(FormulaError, match="at most 100 statements") as err:
        parse("x = 1;\n" * 101)
    assert err.value.line == 101
    with pytest.raises(FormulaError, match="at most 8192"):
        parse("x = 1;" + " " * 9000)
    with pytest.raises(FormulaError, match="a formula is a string"):
        parse(None)


def test_separators_comments_and_format():
    text = "// header\na = 1 // trailing\nb = a +\n    2;;\n\n$TargetDedicatedNodes = b\n"
    out = run(text)
    assert (out["a"], out["b"], out["$TargetDedicatedNodes"]) == (1.0, 3.0, 3.0)
    assert format_results(run('c = time(); v = $PendingTasks.GetSample(3); s = "x"; i = TimeInterval_Minute',
                              metrics=V123)) == (
        "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
        "c=2024-05-01T12:00:00.000Z;v=[1,2,3];s=x;i=0:01:00")


@pytest.mark.parametrize("module", ["batchnb.formula", "batchnb.formula.lexer", "batchnb.formula.values"])
def test_docstring_examples(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0


def test_formula_object():
    f = parse(TASKS)
    assert f.system_variables == {"$PendingTasks"}
    assert parse("x = $CurrentDedicated + $CPUPercent.Count()").system_variables == {
        "$CurrentDedicatedNodes", "$CPUPercent"}
    m = {"$PendingTasks": series(range(30, 0, -1))}
    assert f.evaluate(metrics=m, now=NOW) == evaluate(TASKS, metrics=m, now=NOW)
    assert "Formula" in repr(f)


# -- property tests: nothing but FormulaError escapes ------------------------------------

CORPUS = [PENDING_SAMPLE, CPU, TIME_OF_DAY, TASKS, INITIAL.format(start="2024-05-01T10:00:00Z"),
          "x = percentile($CPUPercent.GetSample(TimeInterval_Minute * 5, 10), 50); y = val($PendingTasks.GetSample(3), 1)"]
VOCAB = ["$PendingTasks", "$CPUPercent", "$TargetDedicatedNodes", "$NodeDeallocationOption", "x", "y",
         ".GetSample(", ".GetSamplePercent(", ".Count()", ".HistoryBeginTime()", ".GetSamplePeriod()", ".hour",
         "TimeInterval_Minute", "TimeInterval_Year", "time()", 'time("2024-05-01")', "avg(", "val(", "lg(",
         "percentile(", "std(", "stop()", "rand()", "max(", "(", ")", ",", ";", "\n", "?", ":", "=", "==", "!",
         "-", "+", "*", "/", "&&", "||", "<", "0", "1", "1e308", "-1", "100", '"s"', "requeue", "//", "$"]
METRICS = {"$PendingTasks": series(range(40)), "$CPUPercent": series([0.5] * 20),
           "$ActiveTasks": series([3] * 30), "$RunningTasks": series([1] * 120)}


def _only_formula_errors(text):
    try:
        f = parse(text)
    except FormulaError as err:
        assert err.line >= 0 and err.column >= 0
        return
    for metrics in (METRICS, None):
        try:
            out = f.evaluate(metrics=metrics, now=NOW, variables={"$CurrentDedicatedNodes": 2}, rng=1)
        except FormulaError:
            continue
        assert set(out) >= {"$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("$()+-*/<>=!&|?:;,.\"' \n0123456789eE_aAxyzTGS")) | st.characters(),
               max_size=80))
def test_arbitrary_text_raises_only_formula_error(text):
    _only_formula_errors(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(VOCAB), max_size=30))
def test_token_soup_raises_only_formula_error(tokens):
    _only_formula_errors("x = " + " ".join(tokens))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.lists(st.tuples(st.sampled_from(["delete", "insert", "swap"]),
                                                   st.integers(0, 2000), st.integers(1, 12), st.sampled_from(VOCAB)),
                                         min_size=1, max_size=4))
def test_mutated_doc_formulas_raise_only_formula_error(text, edits):
    for kind, at, size, token in edits:
        at %= len(text) + 1
        if kind == "delete":
            text = text[:at] + text[at + size:]
        elif kind == "insert":
            text = text[:at] + token + text[at:]
        else:
            text = text[:at] + text[at + size:at + 2 * size] + text[at:at + size] + text[at + 2 * size:]
    _only_formula_errors(text)


_ARITH = st.recursive(
    st.integers(0, 9).map(str),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(" ".join),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"-{e}")),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_ARITH)
def test_arithmetic_matches_python_precedence(expr):
    expected = float(eval(expr))  # the same precedence and associativity as Python's
    assert value(expr) == expected


_ATOMS = st.sampled_from([
    "0", "1", "2.5", "1e308", "-3", '"s"', "time()", 'time("2024-05-01")', "TimeInterval_Minute",
    "TimeInterval_Year", "TimeInterval_Zero", "$PendingTasks", "$CurrentDedicatedNodes", "requeue",
    "$PendingTasks.GetSample(3)", "$CPUPercent.GetSample(TimeInterval_Minute * 5)", "$PendingTasks.Count()",
    "$PendingTasks.HistoryBeginTime()", "$CPUPercent.GetSamplePeriod()", "rand()", "$TargetDedicatedNodes"])
_FUNCS = ["avg", "len", "lg", "ln", "log", "max", "min", "norm", "percentile", "range", "std", "sum", "time",
          "val", "ceil", "floor", "round"]
_OPS = ["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "&&", "||"]
_EXPR = st.recursive(_ATOMS, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(_OPS), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(st.sampled_from(["-", "!"]), inner).map("".join),
    st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
    st.tuples(st.sampled_from(_FUNCS), st.lists(inner, min_size=1, max_size=3)).map(
        lambda t: f"{t[0]}({', '.join(t[1])})"),
    st.tuples(st.sampled_from(["GetSample", "GetSamplePercent"]), st.lists(inner, min_size=1, max_size=3)).map(
        lambda t: f"$PendingTasks.{t[0]}({', '.join(t[1])})"),
    inner.map(lambda e: f"({e}).hour")), max_leaves=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["x", "$TargetDedicatedNodes", "$NodeDeallocationOption"]), _EXPR)
def test_well_formed_expressions_raise_only_formula_error(target, expr):
    _only_formula_errors(f"{target} = {expr};")
