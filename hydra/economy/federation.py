"""The federation that co-signs the token log (``protocols.token``), and how anyone talks to it.

A member (``hydra signpost --ledger``) keeps a replica, checks every proposed entry and its
proof itself, and signs at most one entry per sequence number (the vote is persisted before
the signature leaves). The sequencer, the genesis's first member, orders submissions one at a
time: it builds the entry on its head, checks it, votes, asks the others, and once ``k`` have
co-signed appends it and hands it to everyone. An entry that failed to gather ``k`` votes stays
the sequencer's pending proposal and is driven again before anything else, so the members who
voted for it are never asked to sign a different entry at that number. With ``k`` a majority,
two different entries can never both be sealed at one number unless ``2k - n`` members sign
both; if the sequencer is down, nothing new is sealed until it returns (reads still work from
any member).
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from hydra.economy.proofs import check_proof
from hydra.economy.tokenlog import MICRO, TokenLog, cosign, cosigned, entry_hash
from hydra.errors import HydraError
from hydra.p2p.limits import PeerRateLimiter
from hydra.p2p.streams import FramedStream, open_stream, request, serve
from protocols import token
from protocols.codec import Message, encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.ids import TOKEN_LOG
from protocols.token import Append, Entries, Entry, Fetch, Genesis, GetGenesis, Propose, Sealed, Submit, Vote

log = logging.getLogger(__name__)

MAX_FRAME = token.MAX_PROOF + (1 << 20)
CALL_TIMEOUT_S = 20.0
MAX_SKEW_S = 30.0  # how far a proposed entry's time may be from a member's clock


async def ask(
    host: IHost, peer: str, addrs: Sequence[str], message: Message, timeout: float = CALL_TIMEOUT_S
) -> Message:
    """One request to ``peer`` on the token-log protocol; ``RemoteError``, ``PeerUnreachable``
    or ``ProtocolError`` on failure."""
    with trio.fail_after(timeout):
        raw = await open_stream(host, ID.from_base58(peer), [Multiaddr(a) for a in addrs], TOKEN_LOG, timeout)
        stream = FramedStream(raw, MAX_FRAME)
        try:
            return await request(stream, message, token.REPLIES)
        finally:
            await stream.close()


M = TypeVar("M", bound=Message)


def expect(reply: Message, kind: type[M]) -> M:
    if not isinstance(reply, kind):
        raise ProtocolError(ErrorCode.UNEXPECTED, f"expected {kind.TYPE}, got {reply.TYPE}")
    return reply


async def catch_up(
    host: IHost, log_: TokenLog, peer: str, addrs: Sequence[str], upto: int | None = None
) -> None:
    """Fetch and append ``peer``'s entries until this replica is as long as ``peer``'s log (or
    ``upto`` entries long); every entry is verified as it is appended."""
    while upto is None or log_.length < upto:
        entries = expect(await ask(host, peer, addrs, Fetch(log_.length)), Entries)
        for sealed in entries.sealed:
            log_.append(sealed)
        if not entries.sealed or log_.length >= entries.length:
            return


class FederationMember:
    """A member's side of ``TOKEN_LOG``: ``addrs`` says where every member listens."""

    def __init__(
        self,
        identity: KeyPair,
        log_: TokenLog,
        addrs: Mapping[str, Sequence[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.peer_id = ID.from_pubkey(identity.public_key).to_base58()
        self.log = log_
        self.addrs = dict(addrs)
        self.clock = clock
        self.host: IHost | None = None
        self._sequencing = trio.Lock()
        if self.peer_id not in log_.genesis.members:
            raise ValueError(f"{self.peer_id} is not a member of this federation")
        votes = log_.db["votes"]
        if not votes.exists():
            votes.create({"seq": int, "hash": bytes, "proposal": bytes}, pk="seq")

    @property
    def sequencer(self) -> str:
        return self.log.genesis.members[0]

    def genesis(self) -> Genesis:
        members = self.log.genesis.members
        return Genesis(members, self.log.genesis.k, tuple(tuple(self.addrs.get(m, ())) for m in members))

    def status(self) -> dict[str, object]:
        genesis = self.log.genesis
        return {
            "members": list(genesis.members),
            "k": genesis.k,
            "sequencer": self.peer_id == self.sequencer,
            "entries": self.log.length,
            "supply": self.log.state.supply / MICRO,
        }

    def attach(self, host: IHost, limiter: PeerRateLimiter | None = None) -> None:
        """Serve the token log on ``host`` (by default at most 50 requests a second per peer,
        bursts of 200)."""
        self.host = host
        limiter = limiter or PeerRateLimiter(50.0, 200.0)
        host.set_stream_handler(
            TProtocol(TOKEN_LOG), serve(token.REQUESTS, self.handle, max_frame=MAX_FRAME, limiter=limiter)
        )

    async def handle(self, message: Message, remote: ID) -> Message:
        peer = remote.to_base58()
        if isinstance(message, Submit):
            return await self.submit(message)
        if isinstance(message, Propose):
            if peer != self.sequencer:
                raise ProtocolError(ErrorCode.NOT_ALLOWED, "only the sequencer proposes entries")
            return await self.vote(message)
        if isinstance(message, Append):
            if peer not in self.log.genesis.members:
                raise ProtocolError(ErrorCode.NOT_ALLOWED, "only members hand out sealed entries")
            await self.receive(message.sealed, peer)
            return token.Accepted(message.sealed.entry.seq)
        if isinstance(message, Fetch):
            sealed = tuple(self.log.entries(message.start, message.limit))
            return Entries(sealed, self.log.length)
        if isinstance(message, GetGenesis):
            return self.genesis()
        raise ProtocolError(ErrorCode.UNEXPECTED, f"{message.TYPE} is not a request")

    # --- sequencing --------------------------------------------------------------------------

    async def submit(self, submit: Submit) -> Sealed:
        if self.peer_id != self.sequencer:  # any member takes submissions; the sequencer orders them
            return expect(await self._ask(self.sequencer, submit), Sealed)
        async with self._sequencing:
            pending = self._pending()
            if pending is not None:
                await self._seal(pending)
            entry = Entry(self.log.length, self.log.head, max(self.clock(), self.log.last_at), submit.signed)
            self.log.check(entry)
            check_proof(entry.signed.event, submit.proof)
            return await self._seal(Propose(entry, submit.proof))

    def _pending(self) -> Propose | None:
        row = self.log.db.execute("SELECT proposal FROM votes WHERE seq = ?", [self.log.length]).fetchone()
        if row is None:
            return None
        proposal = token.REQUESTS.decode(row[0])
        assert isinstance(proposal, Propose)
        return proposal

    async def _seal(self, proposal: Propose) -> Sealed:
        entry = proposal.entry
        votes = [self._vote(proposal)]
        others = [m for m in self.log.genesis.members if m != self.peer_id]

        async def collect(member: str) -> None:
            try:
                vote = expect(await self._ask(member, proposal), Vote).cosignature
            except (HydraError, trio.TooSlowError) as exc:
                log.info("member %s did not co-sign entry %d: %s", member, entry.seq, exc)
                return
            if vote.member == member and cosigned(vote, entry):
                votes.append(vote)

        async with trio.open_nursery() as nursery:
            for member in others:
                nursery.start_soon(collect, member)
        if len(votes) < self.log.genesis.k:
            raise ProtocolError(
                ErrorCode.OVERLOADED, f"{len(votes)} of {self.log.genesis.k} members co-signed; try again"
            )
        sealed = Sealed(entry, tuple(votes))
        self.log.append(sealed)
        async with trio.open_nursery() as nursery:
            for member in others:
                nursery.start_soon(self._hand_out, member, sealed)
        return sealed

    async def _hand_out(self, member: str, sealed: Sealed) -> None:
        try:
            await self._ask(member, Append(sealed))
        except (HydraError, trio.TooSlowError) as exc:  # it catches up on its next proposal
            log.info("member %s missed entry %d: %s", member, sealed.entry.seq, exc)

    # --- co-signing --------------------------------------------------------------------------

    async def vote(self, proposal: Propose) -> Vote:
        entry = proposal.entry
        if entry.seq > self.log.length:
            await catch_up(
                self.host_or_fail(),
                self.log,
                self.sequencer,
                self.addrs.get(self.sequencer, ()),
                upto=entry.seq,
            )
        if abs(entry.at - self.clock()) > MAX_SKEW_S:
            raise ProtocolError(
                ErrorCode.BAD_ENTRY, f"the entry's time is {entry.at - self.clock():+.0f}s off"
            )
        self.log.check(entry)
        check_proof(entry.signed.event, proposal.proof)
        return Vote(self._vote(proposal))

    def _vote(self, proposal: Propose) -> token.Cosignature:
        """Sign ``proposal``'s entry, having persisted that this member did: never two entries at
        one sequence number."""
        entry = proposal.entry
        digest = entry_hash(entry)
        row = self.log.db.execute("SELECT hash FROM votes WHERE seq = ?", [entry.seq]).fetchone()
        if row is not None and row[0] != digest:
            raise ProtocolError(ErrorCode.DUPLICATE, f"this member signed another entry {entry.seq}")
        if row is None:
            with self.log.db.conn:
                self.log.db.execute(
                    "INSERT INTO votes (seq, hash, proposal) VALUES (?, ?, ?)",
                    [entry.seq, digest, encode(proposal)],
                )
        return cosign(self.identity, entry)

    async def receive(self, sealed: Sealed, sender: str) -> None:
        if sealed.entry.seq < self.log.length:
            return  # had it already
        if sealed.entry.seq > self.log.length:
            await catch_up(
                self.host_or_fail(), self.log, sender, self.addrs.get(sender, ()), upto=sealed.entry.seq
            )
        self.log.append(sealed)

    def host_or_fail(self) -> IHost:
        if self.host is None:
            raise ProtocolError(ErrorCode.INTERNAL, "the member is not attached to a host")
        return self.host

    async def _ask(self, member: str, message: Message) -> Message:
        return await ask(self.host_or_fail(), member, self.addrs.get(member, ()), message)
