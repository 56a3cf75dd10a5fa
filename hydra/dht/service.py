"""A running DHT participant: identity, libp2p host, Kademlia service and its upkeep.

Shared by ``hydra run`` and ``hydra signpost``: both are DHT peers, the node additionally
announces what it serves. The upkeep task re-dials the signposts while the routing table is
empty (a node started before its signpost joins once the signpost comes up) and refreshes
the table periodically."""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

import hydra
from hydra.dht.config import DiscoveryConfig
from hydra.dht.kademlia import Dht
from hydra.errors import ConfigError
from hydra.p2p.addresses import dialable
from hydra.p2p.home import KEY_FILE
from hydra.p2p.host import build_host, running_host
from hydra.p2p.identity import load_or_create

log = logging.getLogger(__name__)


def parse_bootstrap(addrs: tuple[str, ...]) -> list[Multiaddr]:
    """Signpost multiaddrs, each ending in /p2p/<peer id>; ValueError names the bad one."""
    parsed = []
    for text in addrs:
        try:
            ma = Multiaddr(text)
            info_from_p2p_addr(ma)
        except Exception:  # noqa: BLE001 - multiaddr raises many types for bad text
            raise ConfigError(
                f"bad --bootstrap {text!r}: expected /ip4/HOST/tcp/PORT/p2p/PEER_ID"
            ) from None
        parsed.append(ma)
    return parsed


@dataclass
class DhtPeer:
    keypair: KeyPair
    host: IHost
    dht: Dht
    signposts: list[Multiaddr]
    discovery: DiscoveryConfig
    signposts_answered: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def peer_id(self) -> str:
        return self.dht.peer_id

    def multiaddrs(self) -> list[str]:
        return dialable([str(a) for a in self.host.get_addrs()])

    def status(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "addrs": self.multiaddrs(),
            "version": hydra.__version__,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "routing_table": len(self.dht.routing),
            "connections": len(self.host.get_network().get_connections()),
            "records_held": len(self.dht.store),
            "signposts": {"configured": len(self.signposts), "answered": self.signposts_answered},
        }

    async def upkeep(self, config: DiscoveryConfig) -> None:
        last_refresh = time.monotonic()
        while True:
            await trio.sleep(config.rebootstrap_interval)
            if self.signposts and not len(self.dht.routing):
                self.signposts_answered = await self.dht.bootstrap(self.signposts)
                if self.signposts_answered:
                    log.info("joined the swarm via %d signpost(s)", self.signposts_answered)
            elif time.monotonic() - last_refresh >= config.refresh_interval:
                await self.dht.refresh()
                last_refresh = time.monotonic()
            self.dht.store.expire()


@asynccontextmanager
async def open_dht_peer(
    home: Path | None, listen_host: str, port: int, discovery: DiscoveryConfig
) -> AsyncIterator[DhtPeer]:
    """A DHT peer with the identity kept in ``home``, or a throwaway one if ``home`` is None
    (a one-shot client must not share a running node's peer ID)."""
    signposts = parse_bootstrap(discovery.bootstrap)
    keypair = load_or_create(home / KEY_FILE) if home is not None else create_new_key_pair()
    host = build_host(keypair)
    async with running_host(host, listen_host, port), trio.open_nursery() as nursery:
        dht = Dht(host, discovery)
        peer = DhtPeer(keypair, host, dht, signposts, discovery)
        if signposts:
            peer.signposts_answered = await peer.dht.bootstrap(signposts)
        nursery.start_soon(peer.upkeep, discovery)
        try:
            yield peer
        finally:
            nursery.cancel_scope.cancel()
