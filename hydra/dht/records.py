"""Signing and validating peer records (schema in ``protocols.records``).

Validation is the same on every node and for every path a record arrives by (STORE, FIND_VALUE
replies, HTTP ``/announce``): wrong signature, a record signed by a key other than its
``peer_id``'s, an expired or over-long-lived record, or a malformed body are all rejected."""

import time
from dataclasses import replace

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from hydra.dht.work import has_work
from hydra.privacy.keys import UnboundKey, verify_kx
from protocols.codec import encode, unpack
from protocols.errors import ErrorCode, ProtocolError
from protocols.records import RECORD_DOMAIN, PeerRecord, SignedRecord

MAX_TTL = 3600.0  # no record may claim to live longer: bounds the damage of a stale one
MAX_CLOCK_SKEW = 120.0


def sign(record: PeerRecord, keypair: KeyPair) -> SignedRecord:
    body = encode(record)
    return SignedRecord(body=body, signature=keypair.private_key.sign(RECORD_DOMAIN + body))


def validate(signed: SignedRecord, now: float | None = None, work_bits: int = 0) -> PeerRecord:
    """The verified record inside ``signed``; ``ProtocolError(INVALID_RECORD)`` otherwise.
    ``work_bits``: the proof of work this network demands of an identity."""
    now = time.time() if now is None else now
    try:
        record = PeerRecord.from_wire(_unpack_body(signed.body))
    except ProtocolError as exc:
        raise _invalid(f"malformed body: {exc.message}") from None
    public_key = _public_key(record.peer_id)
    if not public_key.verify(RECORD_DOMAIN + signed.body, signed.signature):
        raise _invalid(f"signature does not match peer {record.peer_id}")
    if record.expires_at <= now:
        raise _invalid(f"record of {record.peer_id} expired {now - record.expires_at:.0f}s ago")
    if record.issued_at > now + MAX_CLOCK_SKEW:
        raise _invalid("record issued in the future")
    if record.expires_at - record.issued_at > MAX_TTL:
        raise _invalid(f"record lifetime exceeds {MAX_TTL:.0f}s")
    if not has_work(record.peer_id, record.region, record.work_nonce, work_bits):
        raise _invalid(f"record of {record.peer_id} lacks {work_bits} bits of proof of work")
    if record.kx_key or record.kx_signature:
        try:
            verify_kx(record.peer_id, record.kx_key, record.kx_signature)
        except UnboundKey as exc:
            raise _invalid(str(exc)) from None
    return record


def fresh(record: PeerRecord, ttl: float, after_seq: int = 0, now: float | None = None) -> PeerRecord:
    """``record`` issued now, expiring ``ttl`` seconds away, with a sequence number above
    ``after_seq`` (the ms clock keeps it rising across restarts too)."""
    now = time.time() if now is None else now
    seq = max(int(now * 1000), after_seq + 1)
    return replace(record, seq=seq, issued_at=now, expires_at=now + ttl)


def _unpack_body(body: bytes) -> dict:
    data = unpack(body)
    if not isinstance(data, dict) or data.get("t") != PeerRecord.TYPE:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "body is not a peer record")
    return data


def _public_key(peer_id: str) -> Ed25519PublicKey:
    try:
        key = ID.from_base58(peer_id).extract_public_key()
    except Exception:  # noqa: BLE001 - any undecodable peer id: refused below
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise _invalid(f"peer id {peer_id[:64]!r} does not embed an Ed25519 key")
    return key


def _invalid(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_RECORD, what)
