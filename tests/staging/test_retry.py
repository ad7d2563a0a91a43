"""The in-attempt retry policy of transfers: its schedule, its bound on time, what it retries."""

from __future__ import annotations

import asyncio
import errno
import socket
import time

import dask.config
import pytest

from batchnb.errors import SpecError, StagingError
from batchnb.staging.retry import RetryPolicy
from batchnb.staging.storage import MISSING, PERMANENT, TRANSIENT, Transfers, classify


def no_jitter():
    return 0.0


def full_jitter():
    return 1.0


# -- the schedule ------------------------------------------------------------------

def test_sleeps_double_from_the_first_delay_up_to_the_cap_and_the_last_ends_the_window():
    policy = RetryPolicy(retry_for=20, delay=0.5, backoff=2.0, max_delay=5, jitter=0.2)
    sleeps = policy.schedule(rng=no_jitter)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 2.5]
    assert sum(sleeps) == 20.0


def test_jitter_only_shortens_a_sleep_so_the_cap_holds():
    policy = RetryPolicy(retry_for=60, delay=0.5, backoff=2.0, max_delay=5, jitter=0.2)
    assert policy.sleep_before(1, 0.0, rng=full_jitter) == pytest.approx(0.4)
    assert policy.sleep_before(10, 0.0, rng=full_jitter) == pytest.approx(4.0)
    assert max(policy.schedule()) <= 5.0
    # A rng in [0, 1): a jittered schedule still ends at the window, and has more sleeps.
    assert sum(policy.schedule(rng=full_jitter)) == pytest.approx(60.0)
    assert len(policy.schedule(rng=full_jitter)) > len(policy.schedule(rng=no_jitter))


def test_the_default_window_covers_a_minute_long_blip():
    policy = RetryPolicy.from_config()
    assert policy == RetryPolicy(retry_for=60, delay=0.5, backoff=2.0, max_delay=5, jitter=0.2)
    sleeps = policy.schedule(rng=full_jitter)
    assert sum(sleeps) == pytest.approx(60.0)
    # After the blip ends a transfer notices within one capped sleep.
    assert max(sleeps) <= 5.0


def test_a_huge_number_of_tries_does_not_overflow():
    policy = RetryPolicy(retry_for=1e9, delay=1, backoff=10.0, max_delay=7, jitter=0)
    assert policy.sleep_before(5000, 0.0) == 7.0


def test_no_try_starts_after_the_window():
    policy = RetryPolicy(retry_for=10, delay=1, backoff=2.0, max_delay=5, jitter=0)
    assert policy.sleep_before(3, 9.5) == 0.5          # cut to end at the window ...
    assert policy.sleep_before(4, 10.0) is None        # ... and nothing after it
    assert policy.sleep_before(1, 11.0) is None        # a try that itself took longer than the window
    assert RetryPolicy(retry_for=0).schedule() == []   # retries off


@pytest.mark.parametrize("key,value", [
    ("staging-retry-for", "a minute"), ("staging-retry-for", -1), ("staging-retry-delay", 0),
    ("staging-retry-max-delay", "0s"), ("staging-retry-backoff", 0.5), ("staging-retry-jitter", 1.0)])
def test_a_bad_setting_is_refused_naming_it(key, value):
    with dask.config.set({f"batchnb.{key}": value}):
        with pytest.raises(SpecError, match=f"batchnb.{key}"):
            RetryPolicy.from_config()


def test_settings_come_from_dask_config():
    with dask.config.set({"batchnb.staging-retry-for": "2m", "batchnb.staging-retry-max-delay": "10s",
                          "batchnb.staging-retry-jitter": 0}):
        policy = RetryPolicy.from_config()
    assert (policy.retry_for, policy.max_delay, policy.jitter) == (120.0, 10.0, 0.0)


# -- applied to transfers: the bound on time -----------------------------------------------

class Down:
    """A store call that fails ``failures`` times with ``error`` (every time when None), counting calls."""

    def __init__(self, error: BaseException, failures: int | None = None):
        self.error, self.failures, self.calls = error, failures, []

    def __call__(self):
        self.calls.append(time.monotonic())
        if self.failures is None or len(self.calls) <= self.failures:
            raise self.error
        return "ok"


def transfers(**policy) -> Transfers:
    return Transfers({}, RetryPolicy(**policy), concurrency=4)


def test_a_transfer_gives_up_at_the_end_of_its_window_not_after_a_count_of_tries():
    call = Down(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    t0 = time.monotonic()
    with pytest.raises(StagingError, match=r"storage unavailable after \d+ tries in 1\.\ds") as info:
        transfers(retry_for=1.2, delay=0.05, backoff=2.0, max_delay=0.2, jitter=0).retry(
            call, what="input x", url="memory://b/x")
    elapsed = time.monotonic() - t0
    assert info.value.transient and info.value.url == "memory://b/x"
    assert 1.2 <= elapsed < 1.2 + 0.5
    # 0.05, 0.1, 0.2, then 0.2 until 1.2 s: eight sleeps (one more when a try's own time
    # leaves a sliver of the window), the last try at the window's end.
    assert 9 <= len(call.calls) <= 10
    assert call.calls[-1] - call.calls[0] == pytest.approx(1.2, abs=0.15)


def test_a_transfer_rides_out_a_blip_shorter_than_its_window():
    call = Down(ConnectionResetError(errno.ECONNRESET, "reset"), failures=6)
    assert transfers(retry_for=5, delay=0.01, max_delay=0.05, jitter=0).retry(
        call, what="output y", url="memory://b/y") == "ok"
    assert len(call.calls) == 7


@pytest.mark.parametrize("error,message", [
    (FileNotFoundError("gone"), "input x: memory://b/x not found"),
    (PermissionError("403 This request is not authorized"), "PermissionError"),
    (OSError(errno.ENOSPC, "No space left on device"), "OSError"),
])
def test_errors_that_are_not_transient_are_not_retried(error, message):
    call = Down(error)
    with pytest.raises(StagingError, match=message) as info:
        transfers(retry_for=30, delay=0.01).retry(call, what="input x", url="memory://b/x",
                                                  missing="input x: memory://b/x not found")
    assert not info.value.transient and len(call.calls) == 1


def test_retries_off_gives_up_at_the_first_transient_error():
    call = Down(TimeoutError("timed out"))
    with pytest.raises(StagingError, match="after 1 tries") as info:
        transfers(retry_for=0).retry(call, what="input x", url="memory://b/x")
    assert info.value.transient and len(call.calls) == 1


# -- which errors are transient ----------------------------------------------------------

class StatusError(Exception):
    def __init__(self, status):
        super().__init__(f"status {status}")
        self.status_code = status


def wrapped(inner: BaseException) -> BaseException:
    outer = RuntimeError("Failed to upload block")
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize("error,kind", [
    (ConnectionRefusedError(), TRANSIENT),
    (ConnectionResetError(), TRANSIENT),
    (socket.timeout("timed out"), TRANSIENT),
    (asyncio.TimeoutError(), TRANSIENT),
    (OSError(errno.EHOSTUNREACH, "No route to host"), TRANSIENT),
    (StatusError(500), TRANSIENT), (StatusError(503), TRANSIENT),
    (StatusError(408), TRANSIENT), (StatusError(429), TRANSIENT),
    (wrapped(StatusError(503)), TRANSIENT),
    (wrapped(ConnectionRefusedError()), TRANSIENT),
    (StatusError(400), PERMANENT), (StatusError(403), PERMANENT),
    (PermissionError(), PERMANENT), (IsADirectoryError(), PERMANENT),
    (OSError(errno.ENOSPC, "full"), PERMANENT), (OSError(errno.EROFS, "read-only"), PERMANENT),
    (ValueError("bad"), PERMANENT),
    (StatusError(404), MISSING), (FileNotFoundError(), MISSING),
])
def test_which_errors_are_transient(error, kind):
    assert classify(error) == kind


def test_the_azure_and_aiohttp_connection_errors_are_transient():
    import aiohttp
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    assert classify(ServiceRequestError("Cannot connect to host 127.0.0.1:1")) == TRANSIENT
    assert classify(ServiceResponseError("Connection reset by peer")) == TRANSIENT
    assert classify(aiohttp.ServerDisconnectedError()) == TRANSIENT
    assert classify(aiohttp.ClientPayloadError("truncated")) == TRANSIENT
