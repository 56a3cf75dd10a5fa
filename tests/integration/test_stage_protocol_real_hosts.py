"""The inference protocol against real stage peers (tiny Llama, real libp2p hosts): every bad
request gets a typed error, other sessions keep running, limits hold, and a fuzzed stream
never breaks a stage."""

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import trio

from hydra.coordinator.generation import GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.privacy.keys import verify_kx
from hydra.privacy.onion import WrappedRoute, wrap_route
from hydra.runtime.wire import to_wire
from hydra.stage.limits import StageLimits
from hydra.stage.links import HopFailed, RemoteLink
from protocols import inference
from protocols.codec import Error, encode
from protocols.errors import ErrorCode
from protocols.framing import encode_frame
from tests.peers import StagePeer, spec_for, stage_peer, swarm
from tests.rawpeer import RawSession, client_host, mutate
from tests.tiny_models import save_tiny_model, tiny_llama_config

HIDDEN = tiny_llama_config().hidden_size
SPEC = spec_for("tiny-llama", 6)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def hop_of(peer: StagePeer, layers: tuple[int, int] | None = None) -> inference.Hop:
    blocks = peer.stage.blocks
    start, end = layers or (blocks.layer_start, blocks.layer_end)
    return inference.Hop(peer.peer_id, (peer.multiaddr,), start, end)


def wrapped(peers: list[StagePeer], max_length: int = 16, protect: bool = False,
            model: str = SPEC.id, layers: tuple[int, int] | None = None,
            step_timeout: float = 10.0, priority: bytes = b"", direct: bool = False,
            compaction: inference.Compaction | None = None) -> WrappedRoute:
    hops = [hop_of(peers[0], layers)] + [hop_of(p) for p in peers[1:]]
    keys = [verify_kx(p.peer_id, p.stage.kx.public, p.stage.kx.signature) for p in peers]
    timeouts = [step_timeout] * len(hops)
    return wrap_route(hops, keys if protect else None, model, max_length, "float32", timeouts, priority,
                      direct=direct, compactions=[compaction] * len(hops) if compaction else None)


def open_request(peer: StagePeer, max_length: int = 16, **kw) -> inference.OpenSession:
    """An unprotected session open (headers in the clear): protocol errors are the same."""
    return wrapped([peer], max_length, **kw).open


def step(position: int, tokens: int = 1, width: int = HIDDEN) -> inference.Step:
    return inference.Step(position=position, hidden=to_wire(torch.randn(1, tokens, width), "float32"))


async def link_to(host, peer: StagePeer) -> RemoteLink:
    return await RemoteLink.open(host, hop_of(peer), 5.0)


async def expect_error(link: RemoteLink, message, code: ErrorCode) -> Error:
    reply = await link.call(message, 10.0)
    assert isinstance(reply, Error), reply
    assert reply.code == code, reply
    return reply


async def test_bad_requests_get_typed_errors_while_another_session_generates(checkpoint):
    async with swarm(SPEC, checkpoint, [(0, 3), (3, 6)]) as (peers, coordinator):
        request = GenerationRequest(SPEC.id, prompt="hello", params=SamplingParams(max_tokens=24))
        undisturbed = await coordinator.generate(request)
        results = []

        async def generate_meanwhile() -> None:
            results.append(await coordinator.generate(request))

        async with client_host() as host, trio.open_nursery() as nursery:
            nursery.start_soon(generate_meanwhile)
            target = peers[0]
            link = await link_to(host, target)
            await expect_error(link, step(0), ErrorCode.UNKNOWN_SESSION)
            await expect_error(link, open_request(target, layers=(0, 5)), ErrorCode.WRONG_LAYERS)
            await expect_error(link, open_request(target, model="other"), ErrorCode.WRONG_LAYERS)
            session = RawSession(host, wrapped([target], max_length=4))
            opened = await link.call(session.route.open, 10.0)
            assert isinstance(opened, inference.SessionOpened) and opened.hops == 1
            await expect_error(link, open_request(target), ErrorCode.UNEXPECTED)
            await expect_error(link, session.step(0, width=HIDDEN + 1), ErrorCode.BAD_TENSOR)
            await expect_error(link, session.step(1), ErrorCode.OUT_OF_ORDER)
            await expect_error(link, session.step(0, tokens=5), ErrorCode.MAX_LENGTH_EXCEEDED)
            unsigned = await expect_error(link, step(0), ErrorCode.BAD_RECEIPT)
            assert unsigned.peer == host.get_id().to_base58()  # the sender is at fault
            assert isinstance(await link.call(session.step(0, tokens=3), 10.0), inference.Hidden)
            await expect_error(link, session.step(3, tokens=2), ErrorCode.MAX_LENGTH_EXCEEDED)
            lying = inference.Step(position=3, hidden=inference.Tensor("float32", (1, 1, HIDDEN), b"x"))
            await link.stream.stream.write(encode_frame(encode(lying)))  # bypass our own encoder
            reply = await link.stream.receive(inference.REPLIES)
            assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_FIELD
            assert isinstance(await link.call(session.step(3), 10.0), inference.Hidden)  # still serving
            assert isinstance(await link.call(inference.CloseSession(), 10.0), inference.SessionClosed)
            await link.aclose()
        assert results[0].token_ids == undisturbed.token_ids
        with trio.fail_after(5):
            while any(p.stage.sessions for p in peers):  # closed sessions free their cache
                await trio.sleep(0.05)


async def test_a_step_rewinds_only_into_the_last_step_and_bad_rewinds_change_nothing(checkpoint):
    """Speculative decoding's rollback (``Step.rewind``) over a real stream: a rewind outside
    the last step is refused with ``out_of_order`` and the session goes on where it was."""
    async with stage_peer(SPEC, checkpoint, (0, 6)) as target, client_host() as host:
        link = await link_to(host, target)
        session = RawSession(host, wrapped([target], max_length=16))
        assert isinstance(await link.call(session.route.open, 10.0), inference.SessionOpened)
        assert isinstance(await link.call(session.step(0, tokens=3), 10.0), inference.Hidden)
        assert isinstance(await link.call(session.step(3, tokens=4, draft=True), 10.0), inference.Hidden)
        for outside in (2, 3, 7, 9):  # before the last step, at its start, at or past the end
            await expect_error(link, session.step(outside, rewind=True), ErrorCode.OUT_OF_ORDER)
        assert isinstance(await link.call(session.step(5, rewind=True), 10.0), inference.Hidden)
        (staged,) = target.stage.sessions.values()
        assert staged.position == 6 and staged.cache.get_seq_length() == 6
        await expect_error(link, session.step(5, rewind=True), ErrorCode.OUT_OF_ORDER)
        assert isinstance(await link.call(session.step(6), 10.0), inference.Hidden)
        await link.aclose()


async def test_compaction_is_granted_ordered_and_checked(checkpoint):
    """A compacting session is granted the cache there is room for, not refused; a step that
    would overflow the grant gets ``cache_full``; a compaction order makes room; orders to a
    session not opened compacting, and budgets for another span, are refused with
    ``bad_field``; nothing refused changes a session."""
    per_token = 2 * 6 * 2 * 16 * 4  # K+V x kv_heads x head_dim x fp32 in 6 blocks
    limits = StageLimits(cache_bytes=1 << 20, peer_share=1.0, priority_share=0.0)
    terms = inference.Compaction()
    async with stage_peer(SPEC, checkpoint, (0, 6), limits=limits) as peer, client_host() as host:
        link = await link_to(host, peer)
        session = RawSession(host, wrapped([peer], max_length=4096, compaction=terms))
        opened = await link.call(session.route.open, 10.0)
        assert isinstance(opened, inference.SessionOpened)
        granted = opened.cache_tokens
        assert 32 <= granted < 4096 and granted * per_token < limits.cache_bytes
        assert isinstance(await link.call(session.step(0, tokens=granted), 10.0), inference.Hidden)
        await expect_error(link, session.step(granted), ErrorCode.CACHE_FULL)
        compacting = session.step(granted, compact=granted // 4)
        assert isinstance(await link.call(compacting, 10.0), inference.Hidden)
        (staged,) = peer.stage.sessions.values()
        assert staged.position == granted + 1 and staged.cache.get_seq_length() == granted // 4 + 1
        assert peer.stage.compactions == 1
        plain_link = await link_to(host, peer)
        plain = RawSession(host, wrapped([peer], max_length=16))
        assert isinstance(await plain_link.call(plain.route.open, 10.0), inference.SessionOpened)
        await expect_error(plain_link, plain.step(0, compact=3), ErrorCode.BAD_FIELD)
        assert isinstance(await plain_link.call(plain.step(0), 10.0), inference.Hidden)
        wrong = RawSession(host, wrapped([peer], compaction=inference.Compaction(shares=((1.0,),) * 2)))
        await expect_error(await link_to(host, peer), wrong.route.open, ErrorCode.BAD_FIELD)
        assert isinstance(await link.call(session.step(granted + 1), 10.0), inference.Hidden)


async def test_session_and_cache_limits_refuse_with_overloaded(checkpoint):
    # bytes per token in 6 blocks: K+V x kv_heads x head_dim x fp32, and the audit log's input
    # and output (2 x hidden 64 x fp32)
    per_token = 2 * 6 * 2 * 16 * 4 + 2 * 64 * 4
    limits = StageLimits(max_sessions=2, cache_bytes=100 * per_token, peer_share=1.0, priority_share=0.0)
    async with stage_peer(SPEC, checkpoint, (0, 6), limits=limits) as peer, client_host() as host:
        assert peer.stage.cache_tokens_free() == 100
        first, second, third = [await link_to(host, peer) for _ in range(3)]
        assert isinstance(await first.call(open_request(peer, max_length=60), 10.0), inference.SessionOpened)
        await expect_error(second, open_request(peer, max_length=60), ErrorCode.OVERLOADED)
        assert isinstance(await second.call(open_request(peer, max_length=40), 10.0), inference.SessionOpened)
        await expect_error(third, open_request(peer, max_length=1), ErrorCode.OVERLOADED)
        await first.aclose()  # the stream's end frees its slot and cache
        with trio.fail_after(5):
            while len(peer.stage.sessions) > 1:
                await trio.sleep(0.05)
        assert isinstance(await third.call(open_request(peer, max_length=50), 10.0), inference.SessionOpened)


async def test_idle_sessions_are_closed(checkpoint):
    limits = StageLimits(idle_timeout=0.5)
    async with stage_peer(SPEC, checkpoint, (0, 6), limits=limits) as peer, client_host() as host:
        link = await link_to(host, peer)
        assert isinstance(await link.call(open_request(peer), 10.0), inference.SessionOpened)
        assert len(peer.stage.sessions) == 1
        with trio.fail_after(5):
            while peer.stage.sessions:
                await trio.sleep(0.05)


async def test_a_collect_stream_outlives_the_idle_timeout_while_its_session_steps(checkpoint):
    """The coordinator says nothing on the stream it collects outputs from: that stream stays
    open as long as the session does, then closes like any idle stream."""
    limits = StageLimits(idle_timeout=0.5)
    async with stage_peer(SPEC, checkpoint, (0, 3), limits=limits) as first, stage_peer(
        SPEC, checkpoint, (3, 6), (first.multiaddr,), limits=limits
    ) as second, client_host() as host:
        session = RawSession(host, wrapped([first, second], direct=True))
        link, collect = await link_to(host, first), await link_to(host, second)
        assert isinstance(await link.call(session.route.open, 10.0), inference.SessionOpened)
        assert isinstance(await collect.call(session.route.collect, 10.0), inference.Collecting)
        for position in range(6):  # 1.8 s in all, each step within the idle timeout
            await trio.sleep(0.3)
            await link.send(session.step(position), 10.0)
            assert isinstance(await collect.receive(10.0), inference.Hidden)
        await link.send(inference.CloseSession(done=6), 10.0)  # the stream goes idle, then closes
        await link.aclose()
        with trio.fail_after(5), pytest.raises(HopFailed, match="closed the stream"):
            await collect.receive(10.0)


async def test_a_dead_next_hop_is_reported_by_name(checkpoint):
    async with swarm(SPEC, checkpoint, [(0, 3), (3, 6)]) as (peers, _), client_host() as host:
        first, second = peers
        link = await link_to(host, first)
        session = RawSession(host, wrapped([first, second], step_timeout=5.0))
        opened = await link.call(session.route.open, 10.0)
        assert isinstance(opened, inference.SessionOpened) and opened.hops == 2
        assert isinstance(await link.call(session.step(0, tokens=2), 10.0), inference.Hidden)
        await second.stop()
        reply = await expect_error(link, session.step(2), ErrorCode.NEXT_HOP_FAILED)
        assert reply.peer == second.peer_id


async def test_a_direct_route_delivers_outputs_and_errors_where_they_are_collected(checkpoint):
    """Steps to the first stage get no reply; the last stage pushes each output, with both
    stages' commitments, or the error that stopped a step, to the stream that collected the
    session; probes report the route's progress; bad collects get typed errors."""
    async with swarm(SPEC, checkpoint, [(0, 3), (3, 6)]) as (peers, _), client_host() as host:
        first, second = peers
        session = RawSession(host, wrapped([first, second], protect=True, direct=True))
        link, collect = await link_to(host, first), await link_to(host, second)
        assert isinstance(await link.call(session.route.open, 10.0), inference.SessionOpened)
        claim = session.route.collect
        await expect_error(collect, replace(claim, token=bytes(len(claim.token))), ErrorCode.UNKNOWN_SESSION)
        assert isinstance(await collect.call(claim, 10.0), inference.Collecting)
        thief = await link_to(host, second)
        await expect_error(thief, claim, ErrorCode.UNEXPECTED)  # one collector per session
        await link.send(session.step(0, tokens=3), 10.0)
        output = await collect.receive(10.0)
        assert isinstance(output, inference.Hidden) and output.position == 0
        assert output.sealed and len(output.commitments) == 2
        assert session.route.from_last.unwrap(output.hidden, output.sealed, 0).shape == (1, 1, HIDDEN)
        progress = await link.call(inference.Probe(5.0), 10.0)
        assert progress == inference.Progress((3, 3))
        await link.send(session.step(5), 10.0)  # out of order: the first stage passes the error on
        refused = await collect.receive(10.0)
        assert isinstance(refused, Error) and refused.code == ErrorCode.OUT_OF_ORDER
        assert refused.peer == first.peer_id
        broken = await link.call(inference.Probe(5.0), 10.0)  # the session steps no more
        assert isinstance(broken, Error) and broken.peer == first.peer_id
        plain = await link_to(host, first)  # a relayed session does not take errors as requests
        relayed = RawSession(host, wrapped([first]))
        assert isinstance(await plain.call(relayed.route.open, 10.0), inference.SessionOpened)
        await expect_error(plain, Error(ErrorCode.ROUTE_BROKEN, "x"), ErrorCode.UNEXPECTED)
        assert await plain.call(inference.Probe(5.0), 10.0) == inference.Progress((0,))
        for opened in (link, collect, thief, plain):
            await opened.aclose()


async def test_fuzzed_inference_stream_never_breaks_the_stage(checkpoint):
    """1,000 seeded mutations of valid requests on one stream: every answer is a typed error
    or a valid reply; afterwards the stage still serves an exact generation."""
    rng = random.Random(99)
    async with swarm(SPEC, checkpoint, [(0, 6)]) as (peers, coordinator), client_host() as host:
        target = peers[0]
        request = GenerationRequest(SPEC.id, prompt="fuzz", params=SamplingParams(max_tokens=8))
        before = await coordinator.generate(request)
        session = RawSession(host, wrapped([target], max_length=64))
        chain = tuple(bytes([i]) * inference.PREFIX_HASH_BYTES for i in range(2))
        reusing = wrap_route([hop_of(target)], None, SPEC.id, 256, "float32", [10.0], b"", chain, 64)
        seeds = [encode(session.route.open), encode(session.step(0)),
                 encode(session.step(0, tokens=2)), encode(inference.CloseSession()),
                 encode(session.step(2, tokens=3, draft=True)), encode(session.step(3, rewind=True)),
                 encode(reusing.open), encode(inference.Probe(2.0)),
                 encode(inference.Collect(bytes(16), bytes(inference.COLLECT_TOKEN_BYTES))),
                 encode(Error(ErrorCode.ROUTE_BROKEN, "gone", peer=target.peer_id))]
        link = await link_to(host, target)
        codes: dict[str, int] = {}
        for _ in range(1000):
            await link.stream.stream.write(encode_frame(mutate(rng, rng.choice(seeds)), inference.MAX_FRAME))
            with trio.fail_after(10):
                reply = await link.stream.receive(inference.REPLIES)
            assert reply is not None
            kind = reply.code if isinstance(reply, Error) else reply.TYPE
            codes[kind] = codes.get(kind, 0) + 1
        assert set(codes) - {c.value for c in ErrorCode} <= {"opened", "hidden", "closed", "progress"}
        assert codes.get(ErrorCode.BAD_MSGPACK, 0) > 100
        assert ErrorCode.INTERNAL not in codes
        after = await coordinator.generate(request)
        assert after.token_ids == before.token_ids
