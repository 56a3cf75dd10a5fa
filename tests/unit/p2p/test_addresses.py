"""A node listening on 0.0.0.0 hands out and announces addresses others can dial."""

from hydra.p2p.addresses import dialable, interface_ipv4

PEER = "12D3KooWExample"


def test_the_wildcard_becomes_every_interface_address():
    expanded = dialable([f"/ip4/0.0.0.0/tcp/4000/p2p/{PEER}"])
    assert expanded == [f"/ip4/{ip}/tcp/4000/p2p/{PEER}" for ip in interface_ipv4()]
    assert expanded[-1] == f"/ip4/127.0.0.1/tcp/4000/p2p/{PEER}"  # loopback last
    assert not any("0.0.0.0" in a for a in expanded)


def test_concrete_addresses_are_kept_once_in_order():
    addrs = ["/ip4/10.1.2.3/tcp/4001", "/ip4/127.0.0.1/tcp/4001", "/ip4/10.1.2.3/tcp/4001"]
    assert dialable(addrs) == addrs[:2]
