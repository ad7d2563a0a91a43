"""The dispatcher's pure decisions about an ended attempt: how long a retry waits."""

from __future__ import annotations

import pytest

from batchnb.engine.outcome import retry_delay
from batchnb.node.attempt import AttemptRecord
from batchnb.spec import Retry

FLOOR = 30.0


def record(category, transient=False, exit_code=None) -> AttemptRecord:
    return AttemptRecord("j", "t", 1, "node-0", 0.0, exit_code=exit_code, category=category, transient=transient)


def low():
    return 0.0


def high():
    return 0.999


@pytest.mark.parametrize("category", ["preprocessing", "upload"])
def test_a_retry_after_storage_stayed_down_waits_even_without_a_retry_delay(category):
    # max_task_retries=2 makes a Retry with no delay: before, such a task ran again at once.
    policy = Retry(max=2)
    assert policy.delay_before(1) == 0.0
    for tries in (1, 2):
        assert retry_delay(policy, tries, record(category, transient=True), FLOOR, rng=low) == FLOOR


def test_the_storage_wait_is_spread_up_by_the_retry_jitter_never_below_the_floor():
    policy = Retry(max=2, jitter=0.1)
    delays = [retry_delay(policy, 1, record("upload", transient=True), FLOOR, rng=rng) for rng in (low, high)]
    assert delays[0] == FLOOR and delays[1] == pytest.approx(FLOOR * 1.0999)


def test_a_longer_retry_delay_of_the_task_wins():
    policy = Retry(max=3, delay="2m", jitter=0)
    assert retry_delay(policy, 1, record("preprocessing", transient=True), FLOOR, rng=low) == 120.0


@pytest.mark.parametrize("failure", [
    record("preprocessing"),                       # a missing input: storage answered
    record("upload"),                              # a refused upload (a bad container name)
    record("exit_code", exit_code=3),
    record("timeout"),
    record("crash", transient=True),               # the flag means something only for staging
])
def test_other_failures_retry_as_their_retry_says(failure):
    assert retry_delay(Retry(max=2), 1, failure, FLOOR, rng=low) == 0.0
    assert retry_delay(Retry(max=2, delay="1s", jitter=0), 2, failure, FLOOR, rng=low) == 2.0
