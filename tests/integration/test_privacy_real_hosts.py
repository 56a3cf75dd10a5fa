"""Onion routing and sealed activations over real libp2p hosts (tiny Llama, 3 stages):
what a stage records, tampering, replay and reordering, unbound keys, and equality of the
output with protection on and off."""

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from hydra.coordinator.generation import GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.coordinator.routing import NoRoute
from hydra.dht.records import sign, validate
from hydra.privacy.channel import RETURN_LABEL, STEP_LABEL, step_aad
from hydra.privacy.config import PrivacyConfig
from hydra.privacy.keys import KxKey, UnboundKey, verify_kx
from hydra.privacy.onion import open_header
from hydra.privacy.sealing import SealedChannel, SealError
from hydra.runtime.wire import to_wire
from hydra.stage.server import StageConversation
from protocols import inference
from protocols.codec import Error
from protocols.errors import ErrorCode, ProtocolError
from tests.factories import keypair, record
from tests.integration.test_stage_protocol_real_hosts import HIDDEN, link_to, wrapped
from tests.peers import MisbehavingOutput, replace_handler, spec_for, stage_peer, swarm
from tests.rawpeer import RawSession, client_host
from tests.tiny_models import save_tiny_model, tiny_llama_config

SPEC = spec_for("tiny-llama", 6)
SPANS = [(0, 2), (2, 4), (4, 6)]
PROMPT = "secret: the launch code is 0000"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def request(max_tokens: int = 16) -> GenerationRequest:
    return GenerationRequest(SPEC.id, prompt=PROMPT, params=SamplingParams(max_tokens=max_tokens))


async def test_protected_and_unprotected_pipelines_give_the_same_tokens(checkpoint):
    async with swarm(SPEC, checkpoint, SPANS) as (_, coordinator):
        protected = await coordinator.generate(request(32))
        coordinator.privacy = PrivacyConfig(protect=False)
        clear = await coordinator.generate(request(32))
    assert protected.token_ids == clear.token_ids and len(protected.token_ids) == 32


@dataclass
class Recorded:
    """What one stage was sent (by whom) and sent back, as its conversations saw it."""

    seen: list[tuple[str, object]] = field(default_factory=list)
    answered: list[object] = field(default_factory=list)  # replies to its predecessor
    pushed: list[tuple[str, object]] = field(default_factory=list)  # to a collecting coordinator

    def handler(self):
        record = self

        class Recording(StageConversation):
            def __init__(self, server, remote, outbox):
                super().__init__(server, remote, _Pushed(outbox, remote, record.pushed))

            async def handle(self, message):
                record.seen.append((self.remote, message))
                reply = await super().handle(message)
                record.answered.append(reply)
                return reply

        return Recording

    def clear(self) -> None:
        for kept in (self.seen, self.answered, self.pushed):
            kept.clear()


@dataclass
class _Pushed:
    outbox: object
    remote: str
    log: list

    async def send(self, message) -> None:
        if not isinstance(message, Error):  # replies to bad requests are not pushes
            self.log.append((self.remote, message))
        await self.outbox.send(message)


async def test_recording_stages_see_their_neighbours_and_ciphertext_only(checkpoint):
    """Over a direct route (the default), the middle stage answers no step (N+1 messages per
    token) and the last stage learns the coordinator, which collects the output from it; over a
    relayed one the output passes back through the middle stage, sealed for the coordinator."""
    middle_view, last_view = Recorded(), Recorded()
    async with swarm(SPEC, checkpoint, SPANS) as (peers, coordinator):
        first, middle, last = peers
        replace_handler(middle, middle_view.handler())
        replace_handler(last, last_view.handler())
        direct = await coordinator.generate(request())
        direct_steps = [m for _, m in middle_view.seen if isinstance(m, inference.Step)]
        assert direct_steps and middle_view.answered.count(None) == len(direct_steps)
        assert not any(isinstance(r, inference.Hidden) for r in middle_view.answered)
        assert {remote for remote, _ in last_view.seen} == {middle.peer_id, coordinator.peer_id}
        collects = [m for r, m in last_view.seen if r == coordinator.peer_id]
        assert [type(m) for m in collects] == [inference.Collect]  # it only asks for the output
        outputs = [m for r, m in last_view.pushed if r == coordinator.peer_id]
        assert len(outputs) == len(direct_steps) and all(o.sealed for o in outputs)
        assert all(len(o.commitments) == 3 for o in outputs)  # every stage's, carried forward
        middle_view.clear()
        last_view.clear()
        coordinator.privacy = PrivacyConfig(relayed_return=True)
        relayed = await coordinator.generate(request())
    assert direct.token_ids == relayed.token_ids and direct.route == relayed.route
    assert relayed.route == [p.peer_id for p in peers]
    assert {remote for remote, _ in last_view.seen} == {middle.peer_id} and not last_view.pushed
    seen = middle_view.seen
    assert {remote for remote, _ in seen} == {first.peer_id}  # only its predecessor talks to it
    (opened,) = [m for _, m in seen if isinstance(m, inference.OpenSession)]
    others = [coordinator.peer_id.encode(), first.peer_id.encode(), last.peer_id.encode()]
    assert opened.ephemeral_key and not any(o in opened.header for o in others)  # sealed
    header = open_header(opened, middle.stage.kx)  # what the middle stage can read
    assert header.next_hop.peer_id == last.peer_id  # its successor...
    assert coordinator.peer_id.encode() not in header.next_header  # ...and nothing beyond
    assert first.peer_id.encode() not in header.next_header
    with pytest.raises(ProtocolError):  # the successor's header is not sealed for it
        open_header(inference.OpenSession(header.next_session_id, SPEC.id, header.next_header,
                                          header.next_ephemeral), middle.stage.kx)
    steps = [m for _, m in seen if isinstance(m, inference.Step)]
    assert steps and all(s.hidden is None and s.sealed for s in steps)
    assert not any(PROMPT.encode() in s.sealed for s in steps)
    # the last stage's output passed through the middle stage sealed for the coordinator:
    # no key the middle stage holds opens it, even in the right place of the right session
    outputs = [r for r in middle_view.answered if isinstance(r, inference.Hidden)]
    assert len(outputs) == len(steps) and all(r.hidden is None and r.sealed for r in outputs)
    for index, output in enumerate(outputs):
        for key, label in ((header.key_in, STEP_LABEL), (header.key_out, STEP_LABEL),
                           (header.key_in, RETURN_LABEL), (header.key_out, RETURN_LABEL)):
            channel = SealedChannel(key, label)
            channel.count = index
            for session_id in (opened.session_id, header.next_session_id):
                with pytest.raises(SealError):
                    channel.open(output.sealed, step_aad(session_id, output.position))


async def test_tampered_replayed_and_reordered_steps_are_rejected(checkpoint):
    async with stage_peer(SPEC, checkpoint, (0, 6)) as peer, client_host() as host:

        async def sealed_session():
            session = RawSession(host, wrapped([peer], max_length=32, protect=True))
            link = await link_to(host, peer)
            assert isinstance(await link.call(session.route.open, 10.0), inference.SessionOpened)
            return link, session

        async def expect(link, step: inference.Step, code: ErrorCode) -> None:
            reply = await link.call(step, 10.0)
            assert isinstance(reply, Error) and reply.code == code, reply

        link, session = await sealed_session()
        ok = session.step(0, width=HIDDEN)
        assert isinstance(await link.call(ok, 10.0), inference.Hidden)
        await expect(link, replace(ok, position=1), ErrorCode.SEAL_FAILED)  # replayed later
        await expect(link, session.step(1, width=HIDDEN), ErrorCode.NEXT_HOP_FAILED)  # the session is dead

        link, session = await sealed_session()
        session.step(0, width=HIDDEN)  # sealed first, never sent
        second = session.step(1, width=HIDDEN)
        await expect(link, replace(second, position=0), ErrorCode.SEAL_FAILED)  # reordered

        link, session = await sealed_session()
        step = session.step(0, width=HIDDEN)
        tampered = bytearray(step.sealed)
        tampered[5] ^= 0x01
        await expect(link, replace(step, sealed=bytes(tampered)), ErrorCode.SEAL_FAILED)

        link, _ = await sealed_session()  # a clear step on a sealed session is refused too
        clear = inference.Step(position=0, hidden=to_wire(torch.randn(1, 1, HIDDEN), "float32"))
        reply = await link.call(clear, 10.0)
        assert isinstance(reply, Error) and reply.code == ErrorCode.SEAL_FAILED
        assert len(peer.stage.sessions) == 4  # the stage itself is fine


async def test_a_tampering_stage_is_routed_around(checkpoint):
    class Tampering(MisbehavingOutput):
        """Seals what it sends on as it should, then flips a bit of every sealed message."""

        @staticmethod
        def wrap(channel, tensor, position):
            hidden, sealed = channel.wrap(tensor, position)
            return hidden, bytes([sealed[0] ^ 0x80]) + sealed[1:]

    async with swarm(SPEC, checkpoint, [*SPANS, (2, 4)]) as (peers, coordinator):
        honest = await coordinator.generate(request())
        used = honest.route[1]
        culprit = next(p for p in peers if p.peer_id == used)
        replace_handler(culprit, Tampering)
        survived = await coordinator.generate(request())
    assert survived.token_ids == honest.token_ids
    assert survived.failovers >= 1 and culprit.peer_id not in survived.route


async def test_a_stage_cannot_replay_its_successors_session_open(checkpoint):
    """The middle stage holds its successor's sealed header; sent again, it would open a
    second session under the same keys (and the same AES-GCM nonces). It is refused."""
    opens: list[inference.OpenSession] = []

    class Recording(StageConversation):
        async def handle(self, message):
            if isinstance(message, inference.OpenSession):
                opens.append(message)
            return await super().handle(message)

    async with swarm(SPEC, checkpoint, SPANS) as (peers, coordinator):
        _, middle, last = peers
        replace_handler(middle, Recording)
        await coordinator.generate(request())
        header = open_header(opens[0], middle.stage.kx)
        replayed = inference.OpenSession(header.next_session_id, SPEC.id, header.next_header,
                                         header.next_ephemeral)
        async with client_host() as host:
            link = await link_to(host, last)
            before = set(last.stage.sessions)  # the generation's own may still be closing
            reply = await link.call(replayed, 10.0)
            assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_ONION
            assert "already used" in reply.message and set(last.stage.sessions) <= before
            await link.aclose()
        again = await coordinator.generate(request())  # fresh headers: still served
    assert again.route == [p.peer_id for p in peers]


def test_an_x25519_key_not_signed_by_the_identity_is_refused():
    identity, impostor = keypair(), keypair()
    good = KxKey.create(identity)
    stolen = KxKey.create(impostor)  # a key signed by someone else
    peer = record(identity).peer_id
    assert verify_kx(peer, good.public, good.signature)
    with pytest.raises(UnboundKey):
        verify_kx(peer, stolen.public, stolen.signature)
    with pytest.raises(UnboundKey):
        verify_kx(peer, stolen.public, good.signature)
    # a record carrying it is refused by every DHT node, even though the record itself is
    # properly signed by its peer
    bad = sign(record(identity, kx_key=stolen.public, kx_signature=stolen.signature), identity)
    with pytest.raises(ProtocolError) as info:
        validate(bad)
    assert info.value.code == ErrorCode.INVALID_RECORD
    assert validate(sign(record(identity, kx_key=good.public, kx_signature=good.signature), identity))


async def test_the_coordinator_refuses_a_candidate_with_an_unbound_key(checkpoint):
    async with swarm(SPEC, checkpoint, [(0, 6)]) as (peers, coordinator):
        stranger = KxKey.create(keypair())
        peers[0].stage.kx = stranger  # it now presents (and would open with) a foreign key
        original = coordinator.candidates

        async def lying_candidates(model):
            return [replace(c, kx_key=stranger.public, kx_signature=stranger.signature)
                    for c in await original(model)]

        coordinator.candidates = lying_candidates
        with pytest.raises(NoRoute) as info:
            await coordinator.generate(request(4))
    assert "not signed by its identity" in str(info.value)


async def test_local_layers_keep_the_output_and_keep_embeddings_home(checkpoint):
    """With the first 2 blocks at the coordinator, the route starts at block 2 and the
    tokens are those of the plain pipeline."""
    async with swarm(SPEC, checkpoint, [*SPANS, (2, 6)]) as (peers, coordinator):
        plain = await coordinator.generate(request(24))
        coordinator.privacy = PrivacyConfig(local_layers=2)
        local = await coordinator.generate(request(24))
    assert local.token_ids == plain.token_ids
    assert peers[0].peer_id not in local.route  # nobody serving blocks 0:2 was asked
    assert local.route and peers[0].peer_id in plain.route


async def test_dp_noise_is_applied_and_auditable(checkpoint):
    from hydra.privacy.dp import verify_noise

    async with swarm(SPEC, checkpoint, SPANS) as (_, coordinator):
        plain = await coordinator.generate(request(12))
        coordinator.privacy = PrivacyConfig(dp_noise_sigma=0.5)
        noisy = await coordinator.generate(request(12))
    assert noisy.token_ids != plain.token_ids  # the noise reached the computation
    assert len(noisy.dp_tags) == 12  # one tag per step: the prompt, then each token fed back
    prompt_tokens = noisy.prompt_tokens
    shape = (1, prompt_tokens, tiny_llama_config().hidden_size)
    assert verify_noise(noisy.dp_tags[0], noisy.dp_audit_key, 0.5, 0, shape)
    assert not verify_noise(noisy.dp_tags[0], noisy.dp_audit_key, 0.4, 0, shape)
    one = (1, 1, shape[2])
    assert verify_noise(noisy.dp_tags[1], noisy.dp_audit_key, 0.5, prompt_tokens, one)
