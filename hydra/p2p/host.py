"""The one place a libp2p host is built and run, with py-libp2p 0.8.1's rough edges handled.

Workarounds:
 - fast dial: ``max_connections_per_peer=1`` skips the fixed 250 ms happy-eyeballs wait;
 - no auto-redial: the swarm's auto connector would re-dial departed peers forever, so
   connections are made only on demand (``hydra.p2p.streams``);
 - port check: a second host can bind a busy port through SO_REUSEPORT, so we test first;
 - Noise only: no plaintext, secio or TLS is offered;
 - clean close: ``host.close()`` before ``run()`` exits, so no socket stays in LISTEN/CLOSE-WAIT.
"""

import errno
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import X25519PrivateKey
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from multiaddr import Multiaddr

from hydra.errors import ConfigError

log = logging.getLogger(__name__)


class PortInUseError(ConfigError):
    """The port a node or signpost should listen on is taken."""


def build_host(keypair: KeyPair) -> IHost:
    noise = NoiseTransport(keypair, noise_privkey=X25519PrivateKey.new())
    host = new_host(
        key_pair=keypair,
        sec_opt={NOISE_ID: noise},
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1, dial_timeout=5.0),
    )

    async def no_auto_connect() -> None:
        return None

    host.get_network().auto_connector.maybe_connect = no_auto_connect  # type: ignore[attr-defined]
    return host


def ensure_port_free(host: str, port: int, flag: str = "") -> None:
    """Raise ``PortInUseError`` if a socket listens on ``host:port`` (port 0 always passes);
    ``flag`` names the option that chooses another port, for the message.

    SO_REUSEADDR lets the probe ignore TIME_WAIT leftovers of our own last run (a restart must
    not wait minutes) while still failing on a live listener, SO_REUSEPORT ones included."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                hint = f": another process listens there; choose another port with {flag}" if flag else ""
                raise PortInUseError(f"{host}:{port} is already in use{hint}") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def listen_multiaddr(host: str, port: int) -> Multiaddr:
    proto = "ip6" if ":" in host else "ip4"
    return Multiaddr(f"/{proto}/{host}/tcp/{port}")


@asynccontextmanager
async def running_host(host: IHost, listen_host: str, port: int) -> AsyncIterator[IHost]:
    """Listen on ``listen_host:port`` (after checking it is free) and close cleanly on exit."""
    ensure_port_free(listen_host, port, "--port")
    async with host.run(listen_addrs=[listen_multiaddr(listen_host, port)]):
        try:
            yield host
        finally:
            await host.close()
