"""The HYDRA token's state: an append-only, hash-chained log replayed into balances.

Every node holds a replica (``TokenLog``, SQLite through sqlite-utils) and trusts an entry only
if it extends its own head, its author signed the event, ``k`` distinct members of the genesis
co-signed the entry's hash, and replaying it obeys the rules of ``TokenState.apply``: the
supply never exceeds ``CAP``, nobody spends more than they hold, a claim mints only its
increase, evidence slashes once, at most ``MAX_CHANNELS`` channels per peer, channel states
only move forward. So a replica needs to trust the federation for ordering and for the checks
of what the log does not hold (receipts and evidence), and for nothing it can replay.

Amounts are integer micro-HYDRA (``MICRO`` per HYDRA).
"""

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import sqlite_utils
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from hydra.economy.channels import CHALLENGE_S, MAX_CHANNELS, TTL_S, co_signed
from hydra.p2p.identity import signed_by
from protocols.channel import ChannelState
from protocols.codec import Schema, encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.token import HASH_BYTES, Cosignature, Entry, Event, Genesis, Sealed, SignedEvent

MICRO = 1_000_000
CAP = 69_000_000 * MICRO
MINT_PER_TOKEN = MICRO // 1000  # 1 HYDRA per 1,000 tokens served while the supply is small
PRICE_PER_UNIT = MINT_PER_TOKEN  # what a payer pays per stage-token over a channel: what serving it mints
SLASH_SHARE = 2  # a slash takes 1/SLASH_SHARE of the stake, unbonding included (and burns it)
PRIORITY_BURN = MICRO // 100  # a priority ticket: 0.01 HYDRA burned ...
TICKET_S = 600.0  # ... for priority at full stages during the ten minutes after the burn
UNBOND_S = 86400.0  # unstaked HYDRA stays slashable this long before it can be withdrawn
TOKEN_LOG_FILE = "tokenlog.db"  # in the node's home

_SEALED = Schema([Sealed])

EVENT_DOMAIN = b"openhydra/token-event/v1\x00"
ENTRY_DOMAIN = b"openhydra/token-entry/v1\x00"
GENESIS_DOMAIN = b"openhydra/token-genesis/v1\x00"
TICKET_DOMAIN = b"openhydra/priority-ticket/v1\x00"


def mint_reward(tokens: int, supply: int) -> int:
    """micro-HYDRA minted for ``tokens`` newly served at ``supply``: the rate falls with what
    is left under the cap, so the supply approaches it and never passes it."""
    return min(CAP - supply, tokens * MINT_PER_TOKEN * (CAP - supply) // CAP)


def ticket_id(secret: bytes) -> bytes:
    return hashlib.blake2b(TICKET_DOMAIN + secret, digest_size=HASH_BYTES).digest()


def genesis_hash(genesis: Genesis) -> bytes:
    raw = msgpack.packb([list(genesis.members), genesis.k], use_bin_type=True)
    return hashlib.blake2b(GENESIS_DOMAIN + raw, digest_size=HASH_BYTES).digest()


def entry_hash(entry: Entry) -> bytes:
    return hashlib.blake2b(ENTRY_DOMAIN + encode(entry), digest_size=HASH_BYTES).digest()


def sign_event(identity: KeyPair, event: Event) -> SignedEvent:
    author = ID.from_pubkey(identity.public_key).to_base58()
    return SignedEvent(event, author, identity.private_key.sign(EVENT_DOMAIN + encode(event)))


def cosign(identity: KeyPair, entry: Entry) -> Cosignature:
    member = ID.from_pubkey(identity.public_key).to_base58()
    return Cosignature(member, identity.private_key.sign(ENTRY_DOMAIN + entry_hash(entry)))


def cosigned(cosignature: Cosignature, entry: Entry) -> bool:
    return signed_by(cosignature.member, ENTRY_DOMAIN + entry_hash(entry), cosignature.signature)


@dataclass
class Channel:
    opener: str  # pays
    peer: str  # is paid
    deposit: int
    opened_at: float
    nonce: int = -1  # of the latest state submitted to the log
    paid: int = 0
    closing_until: float | None = None  # the end of the challenge window once someone closed

    def settles_at(self) -> float:
        """When anyone may settle it: the window's end, or (nobody closed) the TTL's plus a window."""
        return self.closing_until if self.closing_until is not None else self.opened_at + TTL_S + CHALLENGE_S


@dataclass
class TokenState:
    """What replaying the log gives: balances, stakes, open channels and what was used up."""

    balances: Counter[str] = field(default_factory=Counter)
    staked: Counter[str] = field(default_factory=Counter)
    unbonding: Counter[str] = field(default_factory=Counter)  # unstaked, not yet withdrawable
    unbonded_at: dict[str, float] = field(default_factory=dict)  # when an account's unbonding matures
    burned: Counter[str] = field(default_factory=Counter)
    slashed: Counter[str] = field(default_factory=Counter)
    supply: int = 0
    claims: dict[bytes, int] = field(default_factory=dict)  # mint claim -> tokens minted for
    tickets: dict[bytes, tuple[int, float]] = field(default_factory=dict)  # ticket id -> (burned, when)
    evidence: set[bytes] = field(default_factory=set)
    channels: dict[bytes, Channel] = field(default_factory=dict)

    def holdings(self) -> int:
        """Everything accounts hold, liquid, staked or deposited in channels: always the supply."""
        deposits = sum(c.deposit for c in self.channels.values())
        return (
            sum(self.balances.values()) + sum(self.staked.values()) + sum(self.unbonding.values()) + deposits
        )

    def ticket_valid(self, secret: bytes, now: float) -> bool:
        """Whether ``secret`` opens a priority ticket burned for at least ``PRIORITY_BURN`` in
        the last ``TICKET_S`` seconds."""
        burned, at = self.tickets.get(ticket_id(secret), (0, 0.0))
        return burned >= PRIORITY_BURN and at <= now < at + TICKET_S

    def open_channels(self, peer: str) -> int:
        return sum(peer in (c.opener, c.peer) for c in self.channels.values())

    def apply(self, entry: Entry) -> None:
        """Replay ``entry``; a ``ProtocolError`` (state unchanged) if the rules forbid it."""
        signed = entry.signed
        if not signed_by(signed.author, EVENT_DOMAIN + encode(signed.event), signed.signature):
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "the event is not signed by its author")
        self.apply_unsigned(signed.event, entry.at, signed.author)

    def apply_unsigned(self, event: Event, at: float, author: str) -> None:
        """The rules for ``event`` by ``author`` at ``at``, its signature already checked."""
        if event.kind not in ("slash", "channel_settle") and event.account != author:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, f"a {event.kind} is made by the account it concerns")
        getattr(self, f"_{event.kind}")(event, at, author)

    def _spend(self, pool: Counter[str], account: str, amount: int, what: str) -> None:
        if amount <= 0:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, f"{what} a positive amount")
        if pool[account] < amount:
            raise ProtocolError(
                ErrorCode.OVERDRAFT, f"{what} {amount} micro-HYDRA; {account} has {pool[account]}"
            )
        pool[account] -= amount

    def _mint(self, event: Event, at: float, author: str) -> None:
        before = self.claims.get(event.ref, 0)
        if len(event.ref) != HASH_BYTES:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "a mint names its claim")
        if event.amount <= before:
            raise ProtocolError(ErrorCode.STALE, f"the claim already minted for {before} tokens")
        reward = mint_reward(event.amount - before, self.supply)
        self.claims[event.ref] = event.amount
        self.balances[event.account] += reward
        self.supply += reward

    def _burn(self, event: Event, at: float, author: str) -> None:
        """A burn naming a 32-byte ref is a priority ticket (the ref is the hash of its secret)."""
        if event.ref and (len(event.ref) != HASH_BYTES or event.ref in self.tickets):
            raise ProtocolError(ErrorCode.DUPLICATE, "a ticket needs a new 32-byte id")
        self._spend(self.balances, event.account, event.amount, "burn")
        if event.ref:
            self.tickets[event.ref] = (event.amount, at)
        self.burned[event.account] += event.amount
        self.supply -= event.amount

    def _stake(self, event: Event, at: float, author: str) -> None:
        self._spend(self.balances, event.account, event.amount, "stake")
        self.staked[event.account] += event.amount

    def _unstake(self, event: Event, at: float, author: str) -> None:
        """Stake leaves routing at once but stays slashable for ``UNBOND_S`` (a cheater cannot
        unstake ahead of its slash); more unstaking restarts the wait."""
        self._spend(self.staked, event.account, event.amount, "unstake")
        self.unbonding[event.account] += event.amount
        self.unbonded_at[event.account] = at + UNBOND_S

    def _withdraw(self, event: Event, at: float, author: str) -> None:
        if at < self.unbonded_at.get(event.account, 0.0):
            raise ProtocolError(
                ErrorCode.NOT_ALLOWED, f"unbonding until {self.unbonded_at[event.account]:.0f}"
            )
        self._spend(self.unbonding, event.account, event.amount, "withdraw")
        self.balances[event.account] += event.amount

    def _slash(self, event: Event, at: float, author: str) -> None:
        if len(event.ref) != HASH_BYTES:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "a slash names its evidence")
        if event.ref in self.evidence:
            raise ProtocolError(ErrorCode.DUPLICATE, "this evidence has slashed already")
        if author == event.account:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "nobody slashes themselves")
        self.evidence.add(event.ref)
        account = event.account
        penalty = (self.staked[account] + self.unbonding[account]) // SLASH_SHARE
        from_stake = min(penalty, self.staked[account])
        self.staked[account] -= from_stake
        self.unbonding[account] -= penalty - from_stake
        self.slashed[account] += penalty
        self.supply -= penalty

    def _channel_open(self, event: Event, at: float, author: str) -> None:
        if len(event.ref) != ChannelState.ID_BYTES or event.ref in self.channels:
            raise ProtocolError(ErrorCode.DUPLICATE, "a channel needs a new 16-byte id")
        if not event.counterparty or event.counterparty == event.account:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "a channel is between two different peers")
        for peer in (event.account, event.counterparty):
            if self.open_channels(peer) >= MAX_CHANNELS:
                raise ProtocolError(ErrorCode.TOO_MANY_CHANNELS, f"{peer} has {MAX_CHANNELS} open channels")
        self._spend(self.balances, event.account, event.amount, "deposit")
        self.channels[event.ref] = Channel(event.account, event.counterparty, event.amount, at)

    def _channel(self, ref: bytes) -> Channel:
        channel = self.channels.get(ref)
        if channel is None:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "no open channel has that id")
        return channel

    def _channel_close(self, event: Event, at: float, author: str) -> None:
        """A state both sides signed: final (cooperative) settles now; otherwise it opens, or
        within the window replaces with a higher nonce, the challenge window."""
        channel = self._channel(event.ref)
        if author not in (channel.opener, channel.peer):
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "only a channel's two sides close it")
        state = ChannelState.from_bytes(event.state)
        if state.channel_id != event.ref or not co_signed(
            state, channel.opener, channel.peer, event.signatures
        ):
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE, "the state is not this channel's, signed by both sides"
            )
        if state.paid > channel.deposit:
            raise ProtocolError(
                ErrorCode.OVERDRAFT, f"the state pays {state.paid} of a {channel.deposit} deposit"
            )
        if state.nonce <= channel.nonce:
            raise ProtocolError(ErrorCode.STALE, f"state {state.nonce} after state {channel.nonce}")
        if channel.closing_until is not None and at >= channel.closing_until:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "the challenge window has ended")
        channel.nonce, channel.paid = state.nonce, state.paid
        if state.final:
            self._pay_out(event.ref)
        elif channel.closing_until is None:
            channel.closing_until = at + CHALLENGE_S

    def _channel_settle(self, event: Event, at: float, author: str) -> None:
        channel = self._channel(event.ref)
        if at < channel.settles_at():
            raise ProtocolError(
                ErrorCode.NOT_ALLOWED, f"the channel settles at {channel.settles_at():.0f}, not {at:.0f}"
            )
        self._pay_out(event.ref)

    def _pay_out(self, ref: bytes) -> None:
        channel = self.channels.pop(ref)
        self.balances[channel.peer] += channel.paid
        self.balances[channel.opener] += channel.deposit - channel.paid


class TokenLog:
    """A replica of the log: verified entries in SQLite, replayed into ``state`` on open."""

    def __init__(self, genesis: Genesis, path: Path | None = None) -> None:
        self.genesis = genesis
        # opened (and replayed) off the event loop, then used on it: one thread at a time
        conn = sqlite3.connect(path if path is not None else ":memory:", check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        if not self.db["entries"].exists():
            self.db["entries"].create({"seq": int, "sealed": bytes}, pk="seq")
        self.state = TokenState()
        self.head = genesis_hash(genesis)
        self.last_at = 0.0
        self.length = 0
        for (raw,) in self.db.execute("SELECT sealed FROM entries ORDER BY seq").fetchall():
            self._extend(_SEALED.decode(raw))

    def check(self, entry: Entry) -> TokenState:
        """The state after ``entry`` if it may extend this log (``ProtocolError`` otherwise),
        leaving this log unchanged."""
        if entry.seq != self.length or entry.prev != self.head:
            raise ProtocolError(
                ErrorCode.BAD_ENTRY, f"entry {entry.seq} does not extend a log of {self.length}"
            )
        if entry.at < self.last_at:
            raise ProtocolError(ErrorCode.BAD_ENTRY, "entries go forward in time")
        trial = self.state_copy()
        trial.apply(entry)
        return trial

    def append(self, sealed: Sealed) -> None:
        """Verify ``sealed`` (chain, co-signatures, rules) and persist it."""
        self._extend(sealed, persist=True)

    def _extend(self, sealed: Sealed, persist: bool = False) -> None:
        entry = sealed.entry
        signers = {
            c.member for c in sealed.cosignatures if c.member in self.genesis.members and cosigned(c, entry)
        }
        if len(signers) < self.genesis.k:
            raise ProtocolError(
                ErrorCode.BAD_ENTRY, f"{len(signers)} valid co-signatures of {self.genesis.k} needed"
            )
        state = self.check(entry)
        if persist:
            self.db["entries"].insert({"seq": entry.seq, "sealed": encode(sealed)})
        self.state, self.head, self.last_at = state, entry_hash(entry), entry.at
        self.length += 1

    def state_copy(self) -> TokenState:
        s = self.state
        return TokenState(
            Counter(s.balances),
            Counter(s.staked),
            Counter(s.unbonding),
            dict(s.unbonded_at),
            Counter(s.burned),
            Counter(s.slashed),
            s.supply,
            dict(s.claims),
            dict(s.tickets),
            set(s.evidence),
            {ref: Channel(**vars(c)) for ref, c in s.channels.items()},
        )

    def entries(self, start: int, limit: int) -> Iterator[Sealed]:
        rows = self.db.execute(
            "SELECT sealed FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?", [start, limit]
        ).fetchall()
        for (raw,) in rows:
            yield _SEALED.decode(raw)
