"""The /hydra/kad protocol on real libp2p hosts (127.0.0.1): Kademlia put/get across several
hosts, and hostile frames that must get typed errors or a reset while the node keeps serving."""

import logging
import random
from contextlib import AsyncExitStack

import msgpack
import pytest
import trio

from hydra.dht.config import DiscoveryConfig
from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import model_key
from hydra.p2p.host import build_host, running_host
from hydra.p2p.streams import RemoteError, request
from protocols import kad
from protocols.codec import Error, encode
from protocols.errors import ErrorCode
from protocols.framing import encode_frame
from tests.factories import forged_for, keypair, signed
from tests.rawpeer import client_host, kad_stream, mutate


@pytest.fixture
async def swarm():
    """Five DHT hosts, four bootstrapped through the first."""
    async with AsyncExitStack() as stack:
        dhts = []
        for _ in range(5):
            host = build_host(keypair())
            await stack.enter_async_context(running_host(host, "127.0.0.1", 0))
            dhts.append(Dht(host, DiscoveryConfig(work_bits=0)))
        for dht in dhts[1:]:
            assert await dht.bootstrap(dhts[0].host.get_addrs()) == 1
        yield dhts


def addr(dht: Dht) -> str:
    return str(dht.host.get_addrs()[0])


async def test_records_put_on_one_host_are_found_from_every_host(swarm):
    kps = [keypair() for _ in range(3)]
    for kp, dht in zip(kps, swarm[1:4], strict=True):
        assert await dht.put(model_key("m"), signed(kp, model="m")) >= 3
    expected = sorted(signed_peer(kp) for kp in kps)
    for dht in swarm:
        assert sorted(e.record.peer_id for e in await dht.get(model_key("m"))) == expected
        assert await dht.get(model_key("other")) == []


def signed_peer(kp) -> str:
    from hydra.p2p.identity import peer_id

    return peer_id(kp).to_base58()


async def test_store_of_forged_or_expired_records_is_refused_with_a_typed_error(swarm):
    victim = keypair()
    bad = {
        "forged": forged_for(victim, keypair()),
        "expired": signed(keypair(), ttl=-1, issued_at=0.0),
    }
    async with client_host() as host:
        for target in swarm:
            stream = await kad_stream(host, addr(target))
            for record in bad.values():
                with pytest.raises(RemoteError) as info:
                    await request(stream, kad.Store(key="swarm", records=(record,)), kad.REPLIES)
                assert info.value.code == ErrorCode.INVALID_RECORD
            await stream.close()
    for dht in swarm:
        assert await dht.get("swarm") == []


HOSTILE = [
    (b"\xc1", ErrorCode.BAD_MSGPACK),
    (msgpack.packb(["not", "a", "map"]), ErrorCode.BAD_MESSAGE),
    (msgpack.packb({"t": "format_disk"}), ErrorCode.UNKNOWN_TYPE),
    (encode(kad.Pong()), ErrorCode.UNKNOWN_TYPE),  # a reply where a request belongs
    (msgpack.packb({"t": "find_node", "key": b"bytes"}), ErrorCode.BAD_FIELD),
    (msgpack.packb({"t": "store", "key": "k", "records": [{"body": 1, "signature": 2}]}),
     ErrorCode.BAD_FIELD),
]


@pytest.mark.parametrize(("payload", "code"), HOSTILE, ids=[c.value for _, c in HOSTILE])
async def test_bad_messages_get_typed_errors_and_the_stream_keeps_working(swarm, payload, code):
    async with client_host() as host:
        stream = await kad_stream(host, addr(swarm[0]))
        await stream.stream.write(encode_frame(payload))
        reply = await stream.receive(kad.REPLIES)
        assert isinstance(reply, Error) and reply.code == code
        assert isinstance(await request(stream, kad.Ping(), kad.REPLIES), kad.Pong)


async def test_oversized_and_truncated_frames_are_answered_then_reset(swarm):
    async with client_host() as host:
        stream = await kad_stream(host, addr(swarm[0]))
        await stream.stream.write((64 << 20).to_bytes(4, "big") + b"x" * 100)
        reply = await stream.receive(kad.REPLIES)
        assert isinstance(reply, Error) and reply.code == ErrorCode.FRAME_TOO_LARGE
        with trio.fail_after(5):
            assert await stream.receive(kad.REPLIES) is None  # reset after the error

        stream = await kad_stream(host, addr(swarm[0]))
        await stream.stream.write((100).to_bytes(4, "big") + b"x" * 10)
        await stream.stream.close()  # EOF mid-frame
        with trio.fail_after(5):
            reply = await stream.receive(kad.REPLIES)
        assert reply is None or (isinstance(reply, Error) and reply.code == ErrorCode.BAD_FRAME)

        stream = await kad_stream(host, addr(swarm[0]))
        assert isinstance(await request(stream, kad.Ping(), kad.REPLIES), kad.Pong)


async def test_fuzzed_requests_never_break_the_node(swarm):
    """1,000 seeded mutations of valid requests: every answer is a typed error or a valid
    reply, and afterwards the node still stores and finds records."""
    rng = random.Random(1234)
    seeds = [
        encode(kad.Ping(sender_addrs=("/ip4/127.0.0.1/tcp/9",))),
        encode(kad.FindNode(key="model/m")),
        encode(kad.FindValue(key="swarm")),
        encode(kad.Store(key="swarm", records=(signed(keypair()),))),
    ]
    target = swarm[2]
    codes: dict[str, int] = {}
    async with client_host() as host:
        stream = await kad_stream(host, addr(target))
        for _ in range(1000):
            await stream.stream.write(encode_frame(mutate(rng, rng.choice(seeds))))
            reply = await stream.receive(kad.REPLIES)
            assert reply is not None
            kind = reply.code if isinstance(reply, Error) else reply.TYPE
            codes[kind] = codes.get(kind, 0) + 1
    assert set(codes) - {c.value for c in ErrorCode} <= {"pong", "nodes", "stored"}
    assert codes.get(ErrorCode.BAD_MSGPACK, 0) > 100  # the fuzzer really hit the decoder
    kp = keypair()
    await swarm[1].put(model_key("m"), signed(kp, model="m"))
    assert [e.record.peer_id for e in await target.get(model_key("m"))] == [signed_peer(kp)]


async def test_a_node_whose_records_the_swarm_refuses_is_told(caplog):
    """A node configured with less proof of work than the swarm demands stores its record
    only on itself; it must say so loudly rather than believe it joined."""
    async with AsyncExitStack() as stack:
        hosts = [build_host(keypair()) for _ in range(2)]
        for host in hosts:
            await stack.enter_async_context(running_host(host, "127.0.0.1", 0))
        strict = Dht(hosts[0], DiscoveryConfig(work_bits=30))
        lax = Dht(hosts[1], DiscoveryConfig(work_bits=0))
        assert await lax.bootstrap(strict.host.get_addrs()) == 1
        with caplog.at_level(logging.WARNING, logger="hydra.dht.kademlia"):
            stored = await lax.put(model_key("m"), signed(keypair(), model="m"))
    assert stored == 1  # on itself only
    assert "1 node(s) refused this node's record" in caplog.text
    assert "proof of work" in caplog.text and "--work-bits" in caplog.text
