"""hydra.dht.routing: XOR ordering, Kademlia's keep-the-old-contacts rule, failure eviction."""

from hydra.dht.keyspace import distance, key_position
from hydra.dht.routing import RoutingTable
from hydra.p2p.identity import peer_id
from tests.factories import keypair


def ids(n: int) -> list[str]:
    return [peer_id(keypair()).to_base58() for _ in range(n)]


def test_closest_orders_by_xor_distance():
    table = RoutingTable(ids(1)[0], k=20)
    for p in ids(40):
        table.seen(p, ("/ip4/127.0.0.1/tcp/1",))
    target = key_position("model/x")
    found = table.closest(target, 10)
    everyone = sorted(table.contacts(), key=lambda c: distance(c.position, target))
    assert [c.peer_id for c in found] == [c.peer_id for c in everyone[:10]]


def test_full_bucket_keeps_old_contacts_and_ignores_self_and_addressless():
    me = ids(1)[0]
    table = RoutingTable(me, k=1)
    table.seen(me, ("/ip4/127.0.0.1/tcp/1",))
    assert len(table) == 0
    others = ids(200)
    for p in others:
        table.seen(p, ("/ip4/127.0.0.1/tcp/1",))
    first_in_top_bucket = next(p for p in others if table.get(p))
    table.seen(ids(1)[0], ())
    assert table.get(first_in_top_bucket) is not None
    assert len(table) < 20  # one per bucket, and only a handful of buckets are reachable


def test_contact_failing_twice_is_evicted_and_success_resets():
    table = RoutingTable(ids(1)[0])
    p = ids(1)[0]
    table.seen(p, ("/ip4/127.0.0.1/tcp/1",))
    table.failed(p)
    table.seen(p, ("/ip4/127.0.0.1/tcp/2",))
    table.failed(p)
    assert table.get(p).addrs == ("/ip4/127.0.0.1/tcp/2",)
    table.failed(p)
    assert table.get(p) is None
