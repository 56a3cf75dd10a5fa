"""``hydra signpost``: a DHT-only peer with a persistent identity, the HTTP DHT adapter on
:8468, with ``--relay`` a circuit-relay v2 hop for peers behind NAT, and with ``--ledger`` a
member of the federation that co-signs the HYDRA token log."""

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
from hydra.dht.service import DhtPeer, open_dht_peer
from hydra.economy.federation import FederationMember
from hydra.economy.service import split
from hydra.economy.tokenlog import TOKEN_LOG_FILE, TokenLog
from hydra.errors import ConfigError
from hydra.models.catalog import load_catalog
from hydra.p2p.host import ensure_port_free
from protocols.token import Genesis


@asynccontextmanager
async def relay_service(host: IHost, enabled: bool) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    async with background_trio_service(CircuitV2Protocol(host, allow_hop=True)):
        yield


def federation_member(peer: DhtPeer, config: SignpostConfig) -> FederationMember | None:
    """With ``--ledger``: this signpost keeps the token log and co-signs it."""
    token = config.token
    if not token.ledger:
        return None
    members = split(token.federation) or [(peer.peer_id, ())]
    addrs = dict(members) | {peer.peer_id: tuple(peer.dht.own_addrs())}
    if peer.peer_id not in addrs or len(addrs) != len(members):
        raise ConfigError(
            f"--federation must list every member once, this signpost ({peer.peer_id}) included"
        )
    ids = tuple(m for m, _ in members)
    genesis = Genesis(ids, token.k or len(ids) // 2 + 1)
    genesis.check()
    return FederationMember(peer.keypair, TokenLog(genesis, config.home / TOKEN_LOG_FILE), addrs)


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
        member = federation_member(peer, config)
        if member is not None:
            member.attach(peer.host)

        def status() -> dict[str, Any]:
            return {
                "role": "signpost",
                **peer.status(),
                "relay": config.relay,
                "ledger": member.status() if member is not None else None,
                "http_dht": f"http://{config.http_host}:{config.http_port}",
            }

        app = create_app(peer.dht, status, load_catalog())
        await nursery.start(serve_http, app, config.http_host, config.http_port)
        on_ready(status())
        await (trio.Event() if stopping is None else stopping).wait()
        nursery.cancel_scope.cancel()
