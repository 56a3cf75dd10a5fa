"""Round-trip times to candidate peers, measured with a DHT ping and smoothed, so route
choice prefers near peers. Measurements older than ``max_age`` are refreshed before use."""

import time
from collections.abc import Callable, Iterable

import trio

from hydra.coordinator.routing import Candidate
from hydra.dht.kademlia import Dht
from hydra.dht.routing import Contact
from hydra.p2p.streams import PeerUnreachable
from protocols import kad

UNREACHABLE_S = 10.0  # a peer that did not answer a ping: usable, but only as a last resort


class RttTable:
    def __init__(
        self,
        dht: Dht | None,
        max_age: float = 60.0,
        smoothing: float = 0.3,
        on_sample: Callable[[str, float], None] = lambda peer, seconds: None,  # answered pings
    ) -> None:
        self.dht = dht
        self.on_sample = on_sample  # every measurement, e.g. for latency consistency
        self.max_age = max_age
        self.smoothing = smoothing
        self.values: dict[str, float] = {}
        self._measured_at: dict[str, float] = {}

    async def measure(self, candidates: Iterable[Candidate]) -> None:
        now = time.monotonic()
        stale = [
            c for c in candidates if now - self._measured_at.get(c.peer_id, -1e9) > self.max_age
        ]
        if self.dht is None or not stale:
            return
        async with trio.open_nursery() as nursery:
            for candidate in stale:
                nursery.start_soon(self._ping, candidate)

    async def _ping(self, candidate: Candidate) -> None:
        assert self.dht is not None
        started = time.perf_counter()
        try:
            await self.dht.call(Contact(candidate.peer_id, candidate.hop.addrs), kad.Ping())
            sample = time.perf_counter() - started
            self.on_sample(candidate.peer_id, sample)
        except PeerUnreachable:
            sample = UNREACHABLE_S
        self.observe(candidate.peer_id, sample)

    def observe(self, peer_id: str, seconds: float) -> None:
        old = self.values.get(peer_id)
        self.values[peer_id] = seconds if old is None else old + self.smoothing * (seconds - old)
        self._measured_at[peer_id] = time.monotonic()
