"""Re-announces this peer's signed record every interval, under its model key and the swarm
directory key, with a TTL of several intervals so a departed peer fades out by itself."""

import logging
from collections.abc import Callable

import trio
from libp2p.crypto.keys import KeyPair

from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import SWARM_KEY, model_key
from hydra.dht.records import fresh, sign
from protocols.records import PeerRecord

log = logging.getLogger(__name__)

GROWTH_CHECK_S = 0.5


class Announcer:
    def __init__(
        self,
        dht: Dht,
        keypair: KeyPair,
        describe: Callable[[], PeerRecord],
        interval: float,
        ttl: float,
    ) -> None:
        self.dht = dht
        self.keypair = keypair
        self.describe = describe  # the current state of this peer, expiry filled in here
        self.interval = interval
        self.ttl = ttl
        self.last: PeerRecord | None = None
        self.last_stored_on = 0

    async def announce_once(self) -> int:
        """Sign a fresh record and store it; returns on how many nodes the model key landed."""
        record = fresh(self.describe(), self.ttl, after_seq=self.last.seq if self.last else 0)
        signed = sign(record, self.keypair)
        stored = {}

        async def put(key: str) -> None:
            stored[key] = await self.dht.put(key, signed)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(put, model_key(record.model))
            nursery.start_soon(put, SWARM_KEY)
        self.last, self.last_stored_on = record, stored[model_key(record.model)]
        return self.last_stored_on

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._announce_logged()
        task_status.started()
        while True:
            await self._wait_for_next()
            await self._announce_logged()

    async def _wait_for_next(self) -> None:
        """Until the next period, or sooner once the swarm we know has doubled: a record
        stored while we knew few peers (the first node of a swarm stores only on itself)
        must reach the nodes that have since joined, not wait a whole period."""
        known = len(self.dht.routing)
        with trio.move_on_after(self.interval):
            while len(self.dht.routing) < max(1, 2 * known):
                await trio.sleep(GROWTH_CHECK_S)

    async def _announce_logged(self) -> None:
        try:
            stored = await self.announce_once()
            log.debug("announced to %d node(s)", stored)
        except Exception:  # the next period retries; a node must not die of a failed put
            log.exception("announce failed")

