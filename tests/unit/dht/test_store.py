"""hydra.dht.store: the newest valid record per peer, bounded."""

import time

from hydra.dht.records import sign
from hydra.dht.store import RecordStore
from tests.factories import forged_for, keypair, record, signed


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
