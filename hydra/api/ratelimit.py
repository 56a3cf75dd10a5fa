"""Sliding-window rate limiting per client address, bounded in memory."""

import time
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until a request slot frees up

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


class SlidingWindowLimiter:
    """At most ``limit`` requests per ``window`` seconds per key; the least recently seen keys
    are forgotten beyond ``max_keys`` so a flood of addresses cannot grow the table."""

    def __init__(self, limit: int, window: float, max_keys: int = 65536) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, key: str, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        hits = self._hits.pop(key, None) or deque()
        self._hits[key] = hits  # most recently seen last
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        allowed = len(hits) < self.limit
        if allowed:
            hits.append(now)
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)
        reset = hits[0] + self.window - now if hits else 0.0
        return Decision(allowed, self.limit, self.limit - len(hits), max(0, int(reset + 0.999)))
