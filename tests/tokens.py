"""Federations for token tests: in-process (members' keys seal entries directly) and on real
hosts (members serving the token-log protocol), and wallets that follow them."""

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from hydra.dht.service import DhtPeer, open_dht_peer
from hydra.economy.federation import FederationMember
from hydra.economy.tokenlog import TokenLog, cosign, sign_event
from hydra.economy.wallet import Wallet
from hydra.p2p.host import build_host, running_host
from protocols.token import Entry, Event, Genesis, Sealed
from tests.factories import discovery


def peer_of(identity: KeyPair) -> str:
    return ID.from_pubkey(identity.public_key).to_base58()


@dataclass
class LocalFederation:
    n: int = 1
    k: int = 1
    keys: list[KeyPair] = field(init=False)
    genesis: Genesis = field(init=False)
    log: TokenLog = field(init=False)
    now: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        self.keys = [create_new_key_pair() for _ in range(self.n)]
        self.genesis = Genesis(tuple(peer_of(k) for k in self.keys), self.k)
        self.log = TokenLog(self.genesis)

    def entry(self, author: KeyPair, event: Event) -> Entry:
        return Entry(self.log.length, self.log.head, self.now, sign_event(author, event))

    def seal(self, entry: Entry, signers: int | None = None) -> Sealed:
        return Sealed(entry, tuple(cosign(k, entry) for k in self.keys[: signers or self.k]))

    def append(self, author: KeyPair, event: Event) -> Sealed:
        """Seal ``event`` by ``author`` and append it to the replica (raising if refused)."""
        sealed = self.seal(self.entry(author, event))
        self.log.append(sealed)
        return sealed


@dataclass
class FederationPeers:
    """Real hosts on 127.0.0.1, each a member of one federation."""

    peers: list[DhtPeer]
    members: list[FederationMember]

    @property
    def addrs(self) -> dict[str, tuple[str, ...]]:
        return {p.peer_id: tuple(p.dht.own_addrs()) for p in self.peers}

    @property
    def genesis(self) -> Genesis:
        return self.members[0].log.genesis

    def multiaddr(self, i: int = 0) -> str:
        return self.peers[i].multiaddrs()[0]


@asynccontextmanager
async def federation(
    directory: Path, n: int = 3, k: int = 2, clock: Callable[[], float] = time.time
) -> AsyncIterator[FederationPeers]:
    async with AsyncExitStack() as stack:
        peers = []
        for _ in range(n):
            peers.append(await stack.enter_async_context(open_dht_peer(None, "127.0.0.1", 0, discovery())))
        genesis = Genesis(tuple(p.peer_id for p in peers), k)
        addrs = {p.peer_id: tuple(p.dht.own_addrs()) for p in peers}
        members = []
        for i, peer in enumerate(peers):
            replica = TokenLog(genesis, directory / f"member-{i}.db")
            member = FederationMember(peer.keypair, replica, addrs, clock)
            member.attach(peer.host)
            members.append(member)
        yield FederationPeers(peers, members)


@asynccontextmanager
async def wallet_host(
    fed: FederationPeers, identity: KeyPair | None = None, clock: Callable[[], float] = time.time
) -> AsyncIterator[Wallet]:
    """A bare libp2p host on 127.0.0.1 with a wallet following ``fed`` (and taking channel
    updates; ``clock`` judges their TTLs)."""
    identity = identity or create_new_key_pair()
    host = build_host(identity)
    async with running_host(host, "127.0.0.1", 0):
        wallet = Wallet(host, identity, TokenLog(fed.genesis), fed.addrs)
        wallet.channels.clock = clock
        wallet.channels.attach(host)
        yield wallet
