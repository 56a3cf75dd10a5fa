"""hydra.dht.work: proof of work bound to peer id and region."""

import pytest

from hydra.dht.records import sign, validate
from hydra.dht.store import RecordStore
from protocols.errors import ProtocolError
from tests.factories import TEST_WORK_BITS, keypair, record, signed, unworked


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
