"""The Kademlia service: answers KAD RPCs and runs iterative lookups, stores and bootstrap.

Why our own Kademlia instead of py-libp2p's KadDHT: its protocol ID is fixed at
``/ipfs/kad/1.0.0`` (a Hydra swarm must not mix with IPFS), its values are single-valued (a
model key must hold one signed record *per serving peer*, merged by each storing node), and
its framing and error paths are not ours to bound and fuzz. This module reuses libp2p for
everything below the RPC: identity, Noise, Yamux, dialing.

A lookup queries ``alpha`` contacts at a time, closest first, and stops when the ``k`` closest
contacts it knows have all answered, or (for values) once ``quorum`` holders have replied.
Every record from the network is re-validated here: no node is trusted to filter for us.
"""

import logging
from collections.abc import Iterable

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from hydra.dht.config import DiscoveryConfig
from hydra.dht.keyspace import distance, key_position, peer_key
from hydra.dht.routing import Contact, RoutingTable
from hydra.dht.store import Entry, RecordStore
from hydra.p2p.addresses import dialable
from hydra.p2p.limits import PeerRateLimiter
from hydra.p2p.streams import (
    FramedStream,
    PeerUnreachable,
    RemoteError,
    open_stream,
    request,
    serve,
)
from protocols import kad
from protocols.codec import Message
from protocols.errors import ErrorCode, ProtocolError
from protocols.ids import KAD
from protocols.records import SignedRecord

log = logging.getLogger(__name__)


class Dht:
    def __init__(self, host: IHost, config: DiscoveryConfig) -> None:
        self.host = host
        self.config = config
        self.peer_id = host.get_id().to_base58()
        self.routing = RoutingTable(self.peer_id, config.k)
        self.store = RecordStore(work_bits=config.work_bits)
        limiter = PeerRateLimiter(config.peer_rate, config.peer_burst)
        host.set_stream_handler(TProtocol(KAD), serve(kad.REQUESTS, self._handle, limiter=limiter))

    def own_addrs(self) -> tuple[str, ...]:
        return tuple(dialable([str(a) for a in self.host.get_transport_addrs()]))

    # --- serving -----------------------------------------------------------------------------

    async def _handle(self, message: Message, remote: ID) -> Message:
        assert isinstance(message, (kad.Ping, kad.FindNode, kad.FindValue, kad.Store))
        self.routing.seen(remote.to_base58(), message.sender_addrs)
        match message:
            case kad.Ping():
                return kad.Pong()
            case kad.FindNode(key=key):
                return kad.Nodes(contacts=self._contacts_near(key))
            case kad.FindValue(key=key):
                held = self.store.get(key)[: kad.MAX_RECORDS]
                return kad.Nodes(self._contacts_near(key), tuple(e.signed for e in held))
            case kad.Store(key=key, records=records):
                rejected = self.store.put_many(key, records)
                if rejected and len(rejected) == len(records):
                    raise rejected[0]
                return kad.Stored(accepted=len(records) - len(rejected), rejected=len(rejected))
        raise ProtocolError(ErrorCode.UNEXPECTED, f"{message.TYPE} is not a request")

    def _contacts_near(self, key: str) -> tuple[kad.Contact, ...]:
        near = self.routing.closest(key_position(key), min(self.config.k, kad.MAX_CONTACTS))
        return tuple(kad.Contact(peer_id=c.peer_id, addrs=c.addrs) for c in near)

    # --- calling -----------------------------------------------------------------------------

    async def call(self, contact: Contact, message: Message) -> Message:
        """One RPC to ``contact``; updates the routing table with the outcome."""
        try:
            addrs = [Multiaddr(a) for a in contact.addrs]
            raw = await open_stream(
                self.host, ID.from_base58(contact.peer_id), addrs, KAD, self.config.rpc_timeout
            )
            stream = FramedStream(raw)
            try:
                with trio.fail_after(self.config.rpc_timeout):
                    reply = await request(stream, message, kad.REPLIES)
            finally:
                await stream.close()
        except PeerUnreachable:
            self.routing.failed(contact.peer_id)
            raise
        except (ProtocolError, trio.TooSlowError, ValueError) as exc:
            self.routing.failed(contact.peer_id)
            raise PeerUnreachable(contact.peer_id, str(exc) or type(exc).__name__) from None
        self.routing.seen(contact.peer_id, contact.addrs)
        return reply

    async def _lookup(self, key: str, want_values: bool) -> tuple[list[Contact], dict[str, Entry]]:
        make = kad.FindValue if want_values else kad.FindNode
        lookup = _Lookup(self, key_position(key), make(key=key, sender_addrs=self.own_addrs()))
        while True:
            pending = lookup.next_round()
            if not pending or (want_values and lookup.holders >= self.config.quorum):
                break
            async with trio.open_nursery() as nursery:
                for contact in pending:
                    nursery.start_soon(lookup.ask, contact)
        return lookup.closest_answered(), lookup.found

    # --- public API --------------------------------------------------------------------------

    async def put(self, key: str, signed: SignedRecord) -> int:
        """Store ``signed`` on the ``k`` nodes closest to ``key`` (us included if we are one).

        Returns how many nodes accepted it. Raises ``ProtocolError`` for an invalid record."""
        self.store.validate(signed)
        closest, _ = await self._lookup(key, want_values=False)
        stored = 0
        target = key_position(key)
        own = distance(self.routing.own_position, target)
        if len(closest) < self.config.k or own < distance(closest[-1].position, target):
            self.store.put(key, signed)
            stored += 1
        message = kad.Store(key=key, records=(signed,), sender_addrs=self.own_addrs())
        refusals: list[str] = []

        async def store_on(contact: Contact) -> None:
            nonlocal stored
            try:
                await self.call(contact, message)
                stored += 1
            except (PeerUnreachable, RemoteError) as exc:
                if isinstance(exc, RemoteError) and exc.code == ErrorCode.INVALID_RECORD:
                    refusals.append(exc.message)
                log.debug("store of %s on %s failed: %s", key, contact.peer_id, exc)

        async with trio.open_nursery() as nursery:
            for contact in closest:
                nursery.start_soon(store_on, contact)
        if refusals:  # our record is valid here, so the swarm's rules differ from ours
            log.warning(
                "%d node(s) refused this node's record: %s (does --work-bits match the swarm's?)",
                len(refusals), refusals[0],
            )
        return stored

    async def get(self, key: str) -> list[Entry]:
        """Every live, valid record under ``key``: what we hold merged with the network's."""
        found = {e.record.peer_id: e for e in self.store.get(key)}
        _, remote = await self._lookup(key, want_values=True)
        for peer, entry in remote.items():
            if peer not in found or found[peer].record.seq < entry.record.seq:
                found[peer] = entry
        return sorted(found.values(), key=lambda e: e.record.peer_id)

    async def bootstrap(self, multiaddrs: Iterable[Multiaddr]) -> int:
        """Ping each bootstrap peer, then look ourselves up to fill the routing table.

        Returns how many bootstrap peers answered (0: we are on our own for now)."""
        contacts = []
        for ma in multiaddrs:
            info = info_from_p2p_addr(ma)
            if info.peer_id.to_base58() != self.peer_id:
                contacts.append(Contact(info.peer_id.to_base58(), tuple(map(str, info.addrs))))
        answered = 0

        async def ping(contact: Contact) -> None:
            nonlocal answered
            try:
                await self.call(contact, kad.Ping(sender_addrs=self.own_addrs()))
                answered += 1
            except PeerUnreachable as exc:
                log.warning("signpost %s/p2p/%s did not answer: %s", contact.addrs[0],
                            contact.peer_id, exc.reason)
            except RemoteError as exc:
                log.warning("signpost %s refused the ping: %s", contact.peer_id, exc)

        async with trio.open_nursery() as nursery:
            for contact in contacts:
                nursery.start_soon(ping, contact)
        await self.refresh()
        return answered

    async def refresh(self) -> None:
        """Look ourselves up: learns the contacts nearest us and tells them we exist."""
        if len(self.routing):
            await self._lookup(peer_key(self.peer_id), want_values=False)


class _Lookup:
    """The state of one iterative lookup: who is known near the target, who was asked, who
    answered, and the records found on the way."""

    def __init__(self, dht: Dht, target: int, query: Message) -> None:
        self.dht = dht
        self.target = target
        self.query = query
        self.shortlist = {c.peer_id: c for c in dht.routing.closest(target)}
        self.queried: set[str] = set()
        self.answered: list[Contact] = []
        self.found: dict[str, Entry] = {}
        self.holders = 0  # contacts that replied with records

    def by_distance(self, contact: Contact) -> int:
        return distance(contact.position, self.target)

    def next_round(self) -> list[Contact]:
        """The ``alpha`` nearest known contacts not asked yet, marked as asked."""
        nearest = sorted(self.shortlist.values(), key=self.by_distance)[: self.dht.config.k]
        pending = [c for c in nearest if c.peer_id not in self.queried][: self.dht.config.alpha]
        self.queried.update(c.peer_id for c in pending)
        return pending

    async def ask(self, contact: Contact) -> None:
        try:
            reply = await self.dht.call(contact, self.query)
        except (PeerUnreachable, RemoteError):
            return
        if not isinstance(reply, kad.Nodes):
            return
        self.answered.append(contact)
        for c in reply.contacts:
            if c.peer_id != self.dht.peer_id and c.peer_id not in self.shortlist:
                self.shortlist[c.peer_id] = Contact(c.peer_id, c.addrs)
        if reply.records:
            self.holders += 1
            _merge(self.found, reply.records, self.dht.store)

    def closest_answered(self) -> list[Contact]:
        return sorted(self.answered, key=self.by_distance)[: self.dht.config.k]


def _merge(found: dict[str, Entry], records: Iterable[SignedRecord], store: RecordStore) -> None:
    for signed in records:
        try:
            record = store.validate(signed)
        except ProtocolError as exc:
            log.info("dropped an invalid record from a lookup reply: %s", exc.message)
            continue
        held = found.get(record.peer_id)
        if held is None or held.record.seq < record.seq:
            found[record.peer_id] = Entry(record, signed)

