"""Kademlia routing table: 256 k-buckets of contacts ordered by XOR distance from us.

Kademlia's rule for a full bucket: keep long-lived contacts and drop the newcomer, because
peers that have been up longest are likeliest to stay up. A contact that fails twice in a row
is removed, which frees its slot."""

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from hydra.dht.keyspace import ID_BITS, distance, peer_position

MAX_FAILURES = 2


@dataclass
class Contact:
    peer_id: str
    addrs: tuple[str, ...]
    position: int = field(init=False)
    last_seen: float = field(default_factory=time.monotonic)
    failures: int = 0

    def __post_init__(self) -> None:
        self.position = peer_position(self.peer_id)


class RoutingTable:
    def __init__(self, own_peer_id: str, k: int = 20) -> None:
        self.own_position = peer_position(own_peer_id)
        self.own_peer_id = own_peer_id
        self.k = k
        self._buckets: list[OrderedDict[str, Contact]] = [OrderedDict() for _ in range(ID_BITS)]

    def _bucket(self, position: int) -> OrderedDict[str, Contact]:
        return self._buckets[max(distance(self.own_position, position).bit_length() - 1, 0)]

    def seen(self, peer_id: str, addrs: tuple[str, ...]) -> None:
        """Record a live contact (it answered us, or it asked us something)."""
        if peer_id == self.own_peer_id or not addrs:
            return
        contact = Contact(peer_id, addrs)
        bucket = self._bucket(contact.position)
        if peer_id in bucket:
            bucket.move_to_end(peer_id)
            known = bucket[peer_id]
            known.addrs, known.last_seen, known.failures = addrs, time.monotonic(), 0
        elif len(bucket) < self.k:
            bucket[peer_id] = contact

    def failed(self, peer_id: str) -> None:
        bucket = self._bucket(peer_position(peer_id))
        contact = bucket.get(peer_id)
        if contact is not None:
            contact.failures += 1
            if contact.failures >= MAX_FAILURES:
                del bucket[peer_id]

    def closest(self, position: int, count: int | None = None) -> list[Contact]:
        contacts = [c for bucket in self._buckets for c in bucket.values()]
        contacts.sort(key=lambda c: distance(c.position, position))
        return contacts[: count or self.k]

    def get(self, peer_id: str) -> Contact | None:
        return self._bucket(peer_position(peer_id)).get(peer_id)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def contacts(self) -> list[Contact]:
        return [c for bucket in self._buckets for c in bucket.values()]
