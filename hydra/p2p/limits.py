"""Per-peer request rate limits for libp2p protocols: a token bucket per remote peer, bounded
in the number of peers it remembers, so one hostile peer cannot monopolise a node."""

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class PeerRateLimiter:
    def __init__(self, rate: float, burst: float, max_peers: int = 4096) -> None:
        self.rate = rate  # requests per second, sustained
        self.burst = burst  # requests allowed at once
        self.max_peers = max_peers
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, peer: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(peer, None) or _Bucket(self.burst, now)
        self._buckets[peer] = bucket
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
