"""hydra.dht.records: signing and validating peer records."""

import time
from dataclasses import replace

import pytest

from hydra.dht.records import MAX_TTL, fresh, sign, validate
from protocols.codec import encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.records import SignedRecord
from tests.factories import forged_for, keypair, record, signed


def rejected(s: SignedRecord, now: float | None = None) -> str:
    with pytest.raises(ProtocolError) as info:
        validate(s, now)
    assert info.value.code == ErrorCode.INVALID_RECORD
    return info.value.message


def test_valid_record_round_trips():
    kp = keypair()
    r = record(kp)
    assert validate(sign(r, kp)) == r


def test_record_claiming_another_peer_id_is_rejected():
    assert "signature" in rejected(forged_for(victim=keypair(), forger=keypair()))


def test_tampered_body_is_rejected():
    kp = keypair()
    s = signed(kp)
    evil = sign(replace(record(kp), layer_end=29), keypair())
    assert "signature" in rejected(SignedRecord(body=evil.body, signature=s.signature))


def test_expired_and_too_long_lived_and_future_records_are_rejected():
    kp = keypair()
    assert "expired" in rejected(signed(kp, ttl=10), now=time.time() + 11)
    assert "lifetime" in rejected(signed(kp, ttl=MAX_TTL + 60))
    future = time.time() + 3600
    assert "future" in rejected(sign(record(kp, issued_at=future, expires_at=future + 10), kp))


def test_garbage_body_and_bad_peer_id_are_rejected():
    kp = keypair()
    assert "malformed" in rejected(SignedRecord(body=b"\x93\x01\x02", signature=b"x" * 64))
    assert "malformed" in rejected(sign(record(kp, layer_start=5, layer_end=5), kp))
    assert "Ed25519" in rejected(sign(record(kp, peer_id="QmNotAnEd25519Key"), kp))
    not_a_record = encode(replace(record(kp)))[:-3]
    assert "malformed" in rejected(SignedRecord(body=not_a_record, signature=b"x" * 64))


def test_fresh_sequence_numbers_only_rise():
    r = record(keypair())
    later = fresh(r, ttl=5, after_seq=r.seq + 10**9)
    assert later.seq == r.seq + 10**9 + 1 and later.expires_at - later.issued_at == 5
