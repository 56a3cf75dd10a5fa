"""An in-process federation for token-log tests: members' keys seal entries directly."""

from dataclasses import dataclass, field

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from hydra.economy.tokenlog import TokenLog, cosign, sign_event
from protocols.token import Entry, Event, Genesis, Sealed


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
