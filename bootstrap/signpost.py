"""``hydra signpost``: a DHT-only peer with a persistent identity, the HTTP DHT adapter on
:8468 and, with ``--relay``, a circuit-relay v2 hop for peers behind NAT."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.tools.anyio_service import background_trio_service

from hydra.api.app import create_app
from hydra.api.server import serve_http
from hydra.config import SignpostConfig
from hydra.dht.service import open_dht_peer
from hydra.models.catalog import load_catalog
from hydra.p2p.host import ensure_port_free


@asynccontextmanager
async def relay_service(host: IHost, enabled: bool) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    async with background_trio_service(CircuitV2Protocol(host, allow_hop=True)):
        yield


async def run_signpost(
    config: SignpostConfig,
    on_ready: Callable[[dict[str, Any]], None] = lambda status: None,
    stopping: trio.Event | None = None,
) -> None:
    """Run until ``stopping`` is set or until cancelled."""
    ensure_port_free(config.host, config.port, "--port")
    ensure_port_free(config.http_host, config.http_port, "--http-port")
    async with (
        open_dht_peer(config.home, config.host, config.port, config.discovery) as peer,
        relay_service(peer.host, config.relay),
        trio.open_nursery() as nursery,
    ):

        def status() -> dict[str, Any]:
            return {
                "role": "signpost",
                **peer.status(),
                "relay": config.relay,
                "http_dht": f"http://{config.http_host}:{config.http_port}",
            }

        app = create_app(peer.dht, status, load_catalog())
        await nursery.start(serve_http, app, config.http_host, config.http_port)
        on_ready(status())
        await (trio.Event() if stopping is None else stopping).wait()
        nursery.cancel_scope.cancel()
