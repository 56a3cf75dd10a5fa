"""Kademlia RPCs on ``protocols.ids.KAD``: one request, one reply, any number per stream.

Keys are UTF-8 strings (``model/<id>``, ``swarm``); their 256-bit DHT position is the SHA-256
of the key. Values are sets of signed peer records, one per announcing peer, merged by every
storing node, so one lookup of ``model/<id>`` returns everyone who serves that model.
Requests carry the sender's listen addresses so the receiver can add it to its routing table
(the sender's peer ID itself comes from the authenticated Noise session, never the message).
"""

import dataclasses
from typing import ClassVar, Final

from protocols.codec import Error, Message, Schema
from protocols.errors import require
from protocols.records import MAX_ADDRS, MAX_TEXT, SignedRecord

MAX_KEY: Final = 256
MAX_CONTACTS: Final = 32
MAX_RECORDS: Final = 256  # per STORE or VALUE message; keeps a frame well under 1 MiB



def _check_addrs(addrs: tuple[str, ...]) -> None:
    require(len(addrs) <= MAX_ADDRS, f"at most {MAX_ADDRS} addrs")
    require(all(0 < len(a) <= MAX_TEXT for a in addrs), "addr empty or too long")


def _check_key(key: str) -> None:
    require(0 < len(key) <= MAX_KEY, f"key must be 1..{MAX_KEY} characters")


@dataclasses.dataclass(frozen=True)
class Contact(Message):
    TYPE: ClassVar[str] = "contact"
    peer_id: str
    addrs: tuple[str, ...]

    def check(self) -> None:
        require(0 < len(self.peer_id) <= MAX_TEXT, "bad peer id")
        require(len(self.addrs) > 0, "contact without addrs")
        _check_addrs(self.addrs)


@dataclasses.dataclass(frozen=True)
class Ping(Message):
    TYPE: ClassVar[str] = "ping"
    sender_addrs: tuple[str, ...] = ()

    def check(self) -> None:
        _check_addrs(self.sender_addrs)


@dataclasses.dataclass(frozen=True)
class FindNode(Message):
    TYPE: ClassVar[str] = "find_node"
    key: str
    sender_addrs: tuple[str, ...] = ()

    def check(self) -> None:
        _check_key(self.key)
        _check_addrs(self.sender_addrs)


@dataclasses.dataclass(frozen=True)
class FindValue(Message):
    TYPE: ClassVar[str] = "find_value"
    key: str
    sender_addrs: tuple[str, ...] = ()

    def check(self) -> None:
        _check_key(self.key)
        _check_addrs(self.sender_addrs)


@dataclasses.dataclass(frozen=True)
class Store(Message):
    TYPE: ClassVar[str] = "store"
    key: str
    records: tuple[SignedRecord, ...]
    sender_addrs: tuple[str, ...] = ()

    def check(self) -> None:
        _check_key(self.key)
        require(0 < len(self.records) <= MAX_RECORDS, f"1..{MAX_RECORDS} records per store")
        _check_addrs(self.sender_addrs)


@dataclasses.dataclass(frozen=True)
class Pong(Message):
    TYPE: ClassVar[str] = "pong"


@dataclasses.dataclass(frozen=True)
class Nodes(Message):
    """Reply to FIND_NODE, and to FIND_VALUE (with ``records`` filled when the key is held)."""

    TYPE: ClassVar[str] = "nodes"
    contacts: tuple[Contact, ...]
    records: tuple[SignedRecord, ...] = ()

    def check(self) -> None:
        require(len(self.contacts) <= MAX_CONTACTS, f"at most {MAX_CONTACTS} contacts")
        require(len(self.records) <= MAX_RECORDS, f"at most {MAX_RECORDS} records")


@dataclasses.dataclass(frozen=True)
class Stored(Message):
    TYPE: ClassVar[str] = "stored"
    accepted: int
    rejected: int


REQUESTS: Final = Schema([Ping, FindNode, FindValue, Store])
REPLIES: Final = Schema([Pong, Nodes, Stored, Error])
