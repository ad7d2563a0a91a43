"""The alert rules as pure decisions (batchnb/alerts.py): facts in, a reason or None out."""

from __future__ import annotations

import pytest

import batchnb as bnb
from batchnb.alerts import AlertState, Facts, rule_from_dict


def test_failure_rate_counts_only_the_window():
    rule = bnb.alerts.failure_rate(above=0.5, window="10s")
    old_failures = tuple((t, False) for t in (1.0, 2.0, 3.0))
    assert rule.check(Facts(now=100.0, ends=old_failures + ((99.0, True),))) is None
    assert "2 of 3 attempts failed" in rule.check(Facts(now=100.0, ends=((95.0, False), (96.0, False), (97.0, True))))
    assert bnb.alerts.failure_rate(above=0.1, min_attempts=5).check(Facts(now=1.0, ends=((0.5, False),))) is None


def test_each_rule_fires_on_its_fact():
    assert "job j" in bnb.alerts.no_progress(for_="1m").check(Facts(now=100.0, progress={"j": 30.0}))
    assert bnb.alerts.no_progress(for_="1m", job="other").check(Facts(now=100.0, progress={"j": 30.0})) is None
    assert bnb.alerts.no_progress(for_="1m").check(Facts(now=100.0, progress={"j": 50.0})) is None
    assert "dedicated-1" in bnb.alerts.node_unusable().check(Facts(now=0.0, unusable=("dedicated-1",)))
    assert "90%" in bnb.alerts.budget_used(above=0.8).check(Facts(now=0.0, budget_used={"j": 0.9}))
    assert bnb.alerts.budget_used(above=0.95).check(Facts(now=0.0, budget_used={"j": 0.9})) is None
    assert "waited 400s" in bnb.alerts.queue_wait(above="5m").check(Facts(now=0.0, queue_wait={"j": 400.0}))


def test_state_fires_once_and_resolves_once():
    st = AlertState("a", bnb.alerts.node_unusable())
    bad, good = Facts(now=1.0, unusable=("n",)), Facts(now=2.0)
    assert [st.step(bad), st.step(bad), st.step(good), st.step(good)] == ["firing", None, "resolved", None]
    assert (st.state, st.since) == ("ok", 2.0)


@pytest.mark.parametrize("make, field", [
    (lambda: bnb.alerts.failure_rate(above=1.5), "failure_rate.above"),
    (lambda: bnb.alerts.failure_rate(above="x"), "failure_rate.above"),
    (lambda: bnb.alerts.failure_rate(window="soon"), "failure_rate.window"),
    (lambda: bnb.alerts.failure_rate(window=0), "failure_rate.window"),
    (lambda: bnb.alerts.failure_rate(min_attempts=0), "failure_rate.min_attempts"),
    (lambda: bnb.alerts.no_progress(for_=-5), "no_progress.for_"),
    (lambda: bnb.alerts.budget_used(above=0), "budget_used.above"),
    (lambda: bnb.alerts.queue_wait(above="5 parsecs"), "queue_wait.above"),
])
def test_bad_thresholds_and_windows_name_their_field(make, field):
    with pytest.raises(bnb.SpecError) as err:
        make()
    assert err.value.field == field


def test_a_rule_round_trips_through_its_dict():
    rule = bnb.alerts.no_progress(for_="10m", job="j")
    assert rule_from_dict(rule.to_dict()) == rule
    with pytest.raises(bnb.SpecError):
        rule_from_dict({"kind": "nope"})
