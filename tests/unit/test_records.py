"""hydra.dht.records and store: forged, expired, malformed records are rejected."""

import time
from dataclasses import replace

import pytest

from hydra.dht.records import MAX_TTL, fresh, sign, validate
from hydra.dht.store import RecordStore
from protocols.codec import encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.records import SignedRecord
from tests.factories import TEST_WORK_BITS, forged_for, keypair, record, signed, unworked


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


def test_store_keeps_newest_record_per_peer():
    kp = keypair()
    store = RecordStore()
    old, new = record(kp, seq=1), record(kp, seq=2, layer_end=10)
    store.put("k", sign(new, kp))
    store.put("k", sign(old, kp))
    assert [e.record.layer_end for e in store.get("k")] == [10]


def test_store_rejects_invalid_and_expires_records():
    store = RecordStore()
    errors = store.put_many("k", [forged_for(keypair(), keypair()), signed(keypair(), ttl=1)])
    assert len(errors) == 1 and len(store) == 1
    assert store.get("k", now=time.time() + 2) == []
    store.expire(now=time.time() + 2)
    assert len(store) == 0


def test_store_is_bounded_per_key_and_in_keys():
    store = RecordStore(max_keys=2, max_per_key=3)
    for ttl in (10, 20, 30, 40):
        store.put("k", signed(keypair(), ttl=ttl))
    assert sorted(round(e.record.expires_at - e.record.issued_at) for e in store.get("k")) == [
        20, 30, 40,
    ]
    store.put("a", signed(keypair()))
    store.put("b", signed(keypair()))
    assert store.get("b") == [] and len(store.get("a")) == 1


def test_proof_of_work_is_bound_to_peer_and_region():
    from hydra.dht.work import has_work, leading_zero_bits, solve

    assert leading_zero_bits(b"\x00\x0f" + b"\xff" * 30) == 12
    kp = keypair()
    pid = record(kp).peer_id
    nonce = solve(pid, "eu-west", 12)
    assert has_work(pid, "eu-west", nonce, 12)
    good = sign(record(kp, region="eu-west", work_nonce=nonce), kp)
    assert validate(good, work_bits=12).region == "eu-west"
    elsewhere = next(r for r in ("us-east", "ap-south", "sa-east") if not has_work(pid, r, nonce, 12))
    moved = sign(record(kp, region=elsewhere, work_nonce=nonce), kp)  # the work was for eu-west
    lazy = unworked(kp)
    for bad in (moved, lazy):
        with pytest.raises(ProtocolError) as info:
            validate(bad, work_bits=12 if bad is moved else TEST_WORK_BITS)
        assert "proof of work" in info.value.message
    store = RecordStore(work_bits=TEST_WORK_BITS)
    assert store.put_many("k", [lazy, signed(kp)]) and len(store.get("k")) == 1
