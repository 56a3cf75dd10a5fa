"""The HYDRA token log on ``protocols.ids.TOKEN_LOG``: an append-only, hash-chained list of
events (mint, burn, stake, unstake, slash and the life of state channels), each signed by its
author and co-signed by ``k`` of the ``n`` federation members the genesis names.

A node submits a signed event with its proof (a countersigned receipt for a mint, the
evidence for a slash) to any member; the sequencer (the genesis's first member) orders it,
checks it against the state the log replays to, and asks the other members to co-sign; each
member checks it again, proof included, and signs at most one entry per sequence number.
Proofs never enter the log: it records who earned, burned, staked and was slashed, not whom
they served.
"""

import dataclasses
from typing import ClassVar, Final

from protocols.codec import Error, Message, Schema
from protocols.errors import require
from protocols.inference import MAX_LENGTH, SESSION_ID_BYTES, SIGNATURE_BYTES
from protocols.records import MAX_TEXT
from protocols.verify import DIGEST_BYTES

HASH_BYTES: Final = 32
MAX_MEMBERS: Final = 32
MAX_PROOF: Final = 16 << 20  # slash evidence may carry revealed activations
MAX_FETCH: Final = 512  # entries one fetch returns
MAX_AMOUNT: Final = 1 << 62

KINDS: Final = frozenset(
    {
        "mint",
        "burn",
        "stake",
        "unstake",
        "withdraw",
        "slash",
        "channel_open",
        "channel_close",
        "channel_settle",
    }
)


@dataclasses.dataclass(frozen=True)
class Event(Message):
    """What an entry records. ``account`` is whose balance it concerns (the author, except for a
    slash, whose author is the accuser, and a settle, which anyone may submit); ``ref`` ties it
    to what it is about: a mint's claim (a digest of the receipt's payer, payee and session, so
    the payer stays unnamed), a slash's evidence digest, a channel's id."""

    TYPE: ClassVar[str] = "event"
    kind: str
    account: str
    amount: int = 0  # micro-HYDRA; for a mint, the cumulative tokens served in the claimed session
    counterparty: str = ""  # a channel's other side
    ref: bytes = b""
    state: bytes = b""  # a channel close: the packed ChannelState both sides signed
    signatures: tuple[bytes, ...] = ()  # ... and their two signatures over it

    def check(self) -> None:
        require(self.kind in KINDS, f"unknown event kind {self.kind[:32]!r}")
        require(0 < len(self.account) <= MAX_TEXT and len(self.counterparty) <= MAX_TEXT, "bad peer id")
        require(0 <= self.amount <= MAX_AMOUNT, "amount out of range")
        require(len(self.ref) <= HASH_BYTES, "ref too long")
        require(len(self.state) <= 512, "channel state too long")
        require(
            len(self.signatures) <= 2 and all(len(s) == SIGNATURE_BYTES for s in self.signatures),
            "bad channel signatures",
        )


@dataclasses.dataclass(frozen=True)
class SignedEvent(Message):
    TYPE: ClassVar[str] = "signed_event"
    event: Event
    author: str
    signature: bytes  # by ``author`` over the event's msgpack

    def check(self) -> None:
        self.event.check()
        require(0 < len(self.author) <= MAX_TEXT, "bad author")
        require(len(self.signature) == SIGNATURE_BYTES, f"a signature is {SIGNATURE_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class Cosignature(Message):
    TYPE: ClassVar[str] = "cosignature"
    member: str
    signature: bytes

    def check(self) -> None:
        require(0 < len(self.member) <= MAX_TEXT, "bad member id")
        require(len(self.signature) == SIGNATURE_BYTES, f"a signature is {SIGNATURE_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class Entry(Message):
    """One link of the log; its hash (``hydra.economy.tokenlog.entry_hash``) is what members
    co-sign and what the next entry's ``prev`` names."""

    TYPE: ClassVar[str] = "entry"
    seq: int
    prev: bytes
    at: float  # the sequencer's clock: channel windows and TTLs are judged by it
    signed: SignedEvent

    def check(self) -> None:
        require(0 <= self.seq < 1 << 48, "sequence out of range")
        require(len(self.prev) == HASH_BYTES, f"prev is {HASH_BYTES} bytes")
        require(0 <= self.at < 1e11, "timestamp out of range")
        self.signed.check()


@dataclasses.dataclass(frozen=True)
class Sealed(Message):
    TYPE: ClassVar[str] = "sealed"
    entry: Entry
    cosignatures: tuple[Cosignature, ...]

    def check(self) -> None:
        self.entry.check()
        require(len(self.cosignatures) <= MAX_MEMBERS, "too many co-signatures")
        for c in self.cosignatures:
            c.check()


@dataclasses.dataclass(frozen=True)
class Genesis(Message):
    """The federation: its members (the first sequences), how many must co-sign, and where
    they listen (addresses may change; the genesis hash covers only members and ``k``)."""

    TYPE: ClassVar[str] = "genesis"
    members: tuple[str, ...]
    k: int
    addrs: tuple[tuple[str, ...], ...] = ()

    def check(self) -> None:
        require(0 < len(self.members) <= MAX_MEMBERS, f"1 to {MAX_MEMBERS} members")
        require(len(set(self.members)) == len(self.members), "members repeat")
        require(all(0 < len(m) <= MAX_TEXT for m in self.members), "bad member id")
        require(len(self.members) // 2 < self.k <= len(self.members), "k must be a majority of the members")
        require(len(self.addrs) in (0, len(self.members)), "one address list per member")
        require(all(len(a) <= 8 and all(0 < len(x) <= MAX_TEXT for x in a) for a in self.addrs), "bad addrs")


# --- proofs (seen by members, never logged) -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MintProof(Message):
    """A receipt its payer signed (``protocols.receipt.Receipt``) and the payee's countersignature."""

    TYPE: ClassVar[str] = "mint_proof"
    receipt: bytes  # msgpack of the Receipt
    countersignature: bytes

    def check(self) -> None:
        require(0 < len(self.receipt) <= 8192, "receipt empty or too large")
        require(len(self.countersignature) == SIGNATURE_BYTES, f"a signature is {SIGNATURE_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class ChainStep(Message):
    TYPE: ClassVar[str] = "chain_step"
    position: int
    tokens: int
    in_hash: bytes
    out_hash: bytes


@dataclasses.dataclass(frozen=True)
class Equivocation(Message):
    """A stage signed two different outputs for one step: its commitment chain (its terms are
    ``session_id`` to ``dtype``, as ``hydra.verification.commitments.Terms``; then each step;
    ``head_signature`` over the head after the last) says one, the receipt it signed its
    successor (``receipt`` over ``digest`` for the step at ``position`` of the hop
    ``next_session_id``) says another."""

    TYPE: ClassVar[str] = "equivocation"
    peer: str
    session_id: bytes
    model: str
    layer_start: int
    layer_end: int
    model_hash: bytes
    dtype: str
    steps: tuple[ChainStep, ...]
    head_signature: bytes
    position: int
    next_session_id: bytes
    digest: bytes
    receipt: bytes

    def check(self) -> None:
        require(0 < len(self.peer) <= MAX_TEXT, "bad peer id")
        require(0 < len(self.steps) <= MAX_LENGTH, "steps empty or too many")
        require(
            len(self.head_signature) == SIGNATURE_BYTES and len(self.receipt) == SIGNATURE_BYTES,
            f"a signature is {SIGNATURE_BYTES} bytes",
        )
        require(
            len(self.session_id) == len(self.next_session_id) == SESSION_ID_BYTES,
            f"a session id is {SESSION_ID_BYTES} bytes",
        )
        require(
            0 < len(self.model) <= MAX_TEXT and len(self.dtype) <= 16 and len(self.model_hash) <= 64,
            "bad terms",
        )
        require(len(self.digest) == DIGEST_BYTES, f"a digest is {DIGEST_BYTES} bytes")


PROOFS: Final = Schema([MintProof, Equivocation])


# --- requests -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Submit(Message):
    """A node asks for its event to be appended; ``proof`` is seen by members only."""

    TYPE: ClassVar[str] = "submit"
    signed: SignedEvent
    proof: bytes = b""

    def check(self) -> None:
        self.signed.check()
        require(len(self.proof) <= MAX_PROOF, "proof too large")


@dataclasses.dataclass(frozen=True)
class Propose(Message):
    """The sequencer asks a member to co-sign ``entry``, having checked it and its proof."""

    TYPE: ClassVar[str] = "propose"
    entry: Entry
    proof: bytes = b""

    def check(self) -> None:
        self.entry.check()
        require(len(self.proof) <= MAX_PROOF, "proof too large")


@dataclasses.dataclass(frozen=True)
class Append(Message):
    """The sequencer hands members an entry that gathered ``k`` co-signatures."""

    TYPE: ClassVar[str] = "append"
    sealed: Sealed


@dataclasses.dataclass(frozen=True)
class Fetch(Message):
    TYPE: ClassVar[str] = "fetch"
    start: int
    limit: int = MAX_FETCH

    def check(self) -> None:
        require(0 <= self.start < 1 << 48 and 0 < self.limit <= MAX_FETCH, "bad range")


@dataclasses.dataclass(frozen=True)
class GetGenesis(Message):
    TYPE: ClassVar[str] = "get_genesis"


# --- replies --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vote(Message):
    TYPE: ClassVar[str] = "vote"
    cosignature: Cosignature


@dataclasses.dataclass(frozen=True)
class Entries(Message):
    TYPE: ClassVar[str] = "entries"
    sealed: tuple[Sealed, ...]
    length: int  # of the member's log: more remain when start + len(sealed) < length

    def check(self) -> None:
        require(len(self.sealed) <= MAX_FETCH, "too many entries")


@dataclasses.dataclass(frozen=True)
class Accepted(Message):
    TYPE: ClassVar[str] = "accepted"
    seq: int


REQUESTS: Final = Schema([Submit, Propose, Append, Fetch, GetGenesis])
REPLIES: Final = Schema([Sealed, Vote, Entries, Accepted, Genesis, Error])
