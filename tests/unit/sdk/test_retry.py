"""hydra.sdk.retry: which failures are retried for which calls, and that the waits grow,
honour Retry-After and stay within their bounds."""

import pytest

from hydra.sdk.errors import BadRequest, ConnectionFailed, HydraAPIError, NoRoute, RateLimited, StreamError
from hydra.sdk.retry import Attempts, Retry, RetryPolicy

LIMITED = RateLimited(429, "rate_limit_exceeded", "slow down", retry_after=None)
NO_ROUTE = NoRoute(503, "no_route", "no peers cover tiny")
REFUSED = ConnectionFailed("ConnectError: refused", request_sent=False)
LOST = ConnectionFailed("ReadError: reset", request_sent=True)


@pytest.mark.parametrize(
    ("error", "idempotent", "retried"),
    [
        (LIMITED, True, True), (LIMITED, False, True),  # a 429 means nothing was done
        (REFUSED, True, True), (REFUSED, False, True),  # nor does a request that never left
        (NO_ROUTE, True, True), (NO_ROUTE, False, False),  # a money call may have acted
        (LOST, True, True), (LOST, False, False),
        (BadRequest(400, "invalid_value", "bad"), True, False),
        (HydraAPIError(500, "internal", "bug"), True, False),
        (StreamError(None, "shutting_down", "stopped"), True, False),
    ],
)
def test_what_is_retried(error, idempotent, retried) -> None:
    assert RetryPolicy().retryable(error, idempotent) is retried


def test_waits_grow_exponentially_with_jitter_in_their_upper_half_up_to_a_cap() -> None:
    top, bottom = RetryPolicy(jitter=lambda: 1.0), RetryPolicy(jitter=lambda: 0.0)
    assert [top.delay(n, NO_ROUTE) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert [bottom.delay(n, NO_ROUTE) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_a_wait_is_never_shorter_than_retry_after() -> None:
    policy = RetryPolicy(jitter=lambda: 1.0)
    assert policy.delay(0, RateLimited(429, None, "x", retry_after=2.0)) == 2.0
    assert policy.delay(3, RateLimited(429, None, "x", retry_after=2.0)) == 4.0  # backoff already longer


def test_attempts_stop_after_max_retries() -> None:
    heard: list[Retry] = []
    attempts = Attempts(RetryPolicy(max_retries=2, jitter=lambda: 1.0), True, heard.append)
    assert [attempts.after(NO_ROUTE) for _ in range(3)] == [0.5, 1.0, None]
    assert [(r.attempt, r.delay, r.error) for r in heard] == [(1, 0.5, NO_ROUTE), (2, 1.0, NO_ROUTE)]


def test_attempts_stop_before_the_total_wait_passes_its_cap() -> None:
    attempts = Attempts(RetryPolicy(max_retries=10, max_wait_s=10.0, jitter=lambda: 1.0), True)
    waits = []
    while (delay := attempts.after(NO_ROUTE)) is not None:
        waits.append(delay)
    assert waits == [0.5, 1.0, 2.0, 4.0]  # 8 more would make 15.5 s
    long_wait = RateLimited(429, None, "x", retry_after=60.0)
    assert Attempts(RetryPolicy(max_wait_s=30.0), True).after(long_wait) is None  # raised: caller decides


def test_errors_not_retried_are_raised_at_once() -> None:
    assert Attempts(RetryPolicy(), False).after(NO_ROUTE) is None
