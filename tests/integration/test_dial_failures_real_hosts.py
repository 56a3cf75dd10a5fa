"""Failed dials between real libp2p hosts on 127.0.0.1 are reported in words a person can act
on: a wrong peer ID behind a live address, or nothing listening."""

import pytest
from libp2p.peer.id import ID

from hydra.p2p.identity import peer_id
from hydra.p2p.streams import PeerUnreachable, open_stream
from protocols.ids import KAD
from tests.factories import keypair
from tests.rawpeer import client_host
from tests.swarm import free_port


async def test_a_live_address_with_another_peer_id_says_so():
    async with client_host() as listener, client_host() as dialer:
        wrong = peer_id(keypair())  # not the listener's
        with pytest.raises(PeerUnreachable) as info:
            await open_stream(dialer, wrong, listener.get_addrs(), KAD, 5.0)
    assert info.value.peer == wrong.to_base58()
    assert "not this peer ID" in info.value.reason


async def test_an_address_where_nothing_listens_says_so():
    from multiaddr import Multiaddr

    async with client_host() as dialer:
        nobody = ID.from_base58(peer_id(keypair()).to_base58())
        with pytest.raises(PeerUnreachable) as info:
            await open_stream(dialer, nobody, [Multiaddr(f"/ip4/127.0.0.1/tcp/{free_port()}")], KAD, 5.0)
    assert "nothing accepts connections" in info.value.reason
