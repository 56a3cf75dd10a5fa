"""When a call is tried again, and after how long.

The rule follows from what each failure says about whether the node acted:

- **429** (rate limited) is answered before the node does anything, so every call is retried,
  money calls included, no sooner than ``Retry-After`` says (seconds or an HTTP date).
- **A connection that failed before the request was sent** (refused, connect or pool
  timeout) reached nothing: every call is retried.
- **503** (``no_route``, ``shutting_down``, ``overloaded``...) and **a connection lost after
  the request was sent** (reset, read timeout) leave open whether the node acted. Only calls
  that are safe to repeat are retried: reads, and generations (repeating one changes nothing
  but the credits it spends). Stake, unstake and opening or closing a channel move HYDRA and
  are not: those failures are raised at once, for the caller to check the balance first.
- **A stream is never retried once its response began** (a 200 and its headers arrived):
  the caller has seen part of the reply. Failures before that are retried as above.
- Anything else (400, 403, 404, 500, an unreadable answer) is raised at once: repeating the
  same request would get the same answer.

Bounds: at most ``max_retries`` retries; the n-th waits ``backoff_s * 2**n`` capped at
``max_backoff_s``, with "equal jitter" (a random point in its upper half) so clients that
failed together do not return together, and never less than ``Retry-After``; when the next
wait would take the call's total waiting past ``max_wait_s``, the last error is raised
instead (a ``RateLimited`` still carrying its ``retry_after``)."""

import random
from collections.abc import Callable
from dataclasses import dataclass

from hydra.sdk.errors import ConnectionFailed, HydraAPIError, RateLimited, ServiceUnavailable


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_wait_s: float = 30.0
    jitter: Callable[[], float] = random.random  # uniform in [0, 1); tests pin it

    def retryable(self, error: HydraAPIError, idempotent: bool) -> bool:
        if isinstance(error, RateLimited):
            return True
        if isinstance(error, ConnectionFailed):
            return idempotent or not error.request_sent
        return idempotent and isinstance(error, ServiceUnavailable)

    def delay(self, retry: int, error: HydraAPIError) -> float:
        """Seconds before retry number ``retry`` (from 0) after ``error``."""
        backoff = min(self.max_backoff_s, self.backoff_s * 2**retry)
        wait = backoff / 2 + self.jitter() * backoff / 2
        if isinstance(error, RateLimited) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


@dataclass(frozen=True)
class Retry:
    """What ``on_retry`` hears before each wait: ``attempt`` (from 1) failed with ``error``."""

    attempt: int
    delay: float
    error: HydraAPIError


class Attempts:
    """One call's retry bookkeeping, shared by the sync and async clients."""

    def __init__(self, policy: RetryPolicy, idempotent: bool,
                 on_retry: Callable[[Retry], None] | None = None) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.on_retry = on_retry
        self.retries = 0
        self.waited = 0.0

    def after(self, error: HydraAPIError) -> float | None:
        """How long to wait before trying again after ``error``; None: raise it."""
        policy = self.policy
        if self.retries >= policy.max_retries or not policy.retryable(error, self.idempotent):
            return None
        delay = policy.delay(self.retries, error)
        if self.waited + delay > policy.max_wait_s:
            return None
        self.retries += 1
        self.waited += delay
        if self.on_retry is not None:
            self.on_retry(Retry(self.retries, delay, error))
        return delay
