"""``hydra run``: one trio nursery holding the DHT peer, the announce loop and the HTTP API."""

import logging
from collections.abc import Callable
from typing import Any

import trio

import hydra
from hydra.api.app import create_app
from hydra.api.server import serve_http
from hydra.config import NodeConfig
from hydra.dht.announcer import Announcer
from hydra.dht.service import DhtPeer, open_dht_peer
from hydra.models.catalog import ModelSpec, load_catalog
from hydra.p2p.host import ensure_port_free
from protocols.records import PeerRecord

log = logging.getLogger(__name__)


def served_layers(config: NodeConfig, spec: ModelSpec) -> tuple[int, int]:
    start, end = config.layers or (0, spec.num_layers)
    if end > spec.num_layers:
        raise ValueError(f"{spec.id} has {spec.num_layers} layers; cannot serve {start}:{end}")
    return start, end


def describe(peer: DhtPeer, spec: ModelSpec, layers: tuple[int, int], dtype: str) -> PeerRecord:
    """What this peer serves now; the announcer stamps time, expiry and sequence number."""
    return PeerRecord(
        peer_id=peer.peer_id,
        seq=0,
        issued_at=0.0,
        expires_at=0.0,
        addrs=peer.dht.own_addrs(),
        version=hydra.__version__,
        model=spec.id,
        layer_start=layers[0],
        layer_end=layers[1],
        total_layers=spec.num_layers,
        dtype=dtype,
    )


async def run_node(
    config: NodeConfig,
    on_ready: Callable[[dict[str, Any]], None] = lambda status: None,
) -> None:
    """Run until cancelled. ``on_ready`` receives the first status once everything listens."""
    catalog = load_catalog()
    spec = catalog.resolve(config.model or catalog.default)
    layers = served_layers(config, spec)
    ensure_port_free(config.api_host, config.api_port)  # fail before joining the swarm
    discovery = config.discovery
    async with open_dht_peer(config.home, config.host, config.port, discovery) as peer:
        announcer = Announcer(
            peer.dht,
            peer.keypair,
            lambda: describe(peer, spec, layers, config.dtype),
            discovery.announce_interval,
            discovery.record_ttl,
        )

        def status() -> dict[str, Any]:
            last = announcer.last
            return {
                "role": "node",
                **peer.status(),
                "api": f"http://{config.api_host}:{config.api_port}",
                "model": spec.id,
                "layers": list(layers),
                "total_layers": spec.num_layers,
                "announce": {
                    "interval_s": discovery.announce_interval,
                    "ttl_s": discovery.record_ttl,
                    "last_seq": last.seq if last else None,
                    "stored_on": announcer.last_stored_on,
                },
            }

        app = create_app(peer.dht, status)
        async with trio.open_nursery() as nursery:
            await nursery.start(announcer.run)
            await nursery.start(serve_http, app, config.api_host, config.api_port)
            on_ready(status())
