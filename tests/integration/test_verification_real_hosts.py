"""Verification over real libp2p hosts (tiny Llama, fp32): peer A serves blocks 0:3, B and C
serve 3:6. B is made to cheat by a test-only conversation class; the coordinator routes
through A and B, audits B's steps, has C recompute them, and must catch every kind of cheat,
exclude B from new routes, and keep generating the tokens an honest route gives."""

import dataclasses
import os
import sys
from pathlib import Path

import httpx
import msgpack
import pytest
import torch
import trio

from hydra.api.app import create_app
from hydra.api.server import serve_http
from hydra.coordinator.generation import Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.coordinator.routing import Candidate
from hydra.runtime.compute import run_compute
from hydra.stage.server import StageConversation
from hydra.verification.commitments import Terms, signed_chain
from hydra.verification.config import VerificationConfig
from protocols.verify import Commitment
from tests.peers import StagePeer, replace_handler, spec_for, swarm
from tests.swarm import free_port
from tests.tiny_models import save_tiny_model, tiny_llama_config

SPEC = spec_for("tiny-llama", 6)
SPANS = [(0, 3), (3, 6), (3, 6)]
REQUEST = GenerationRequest(SPEC.id, prompt="Verify me", params=SamplingParams(max_tokens=6))
EVERY_STEP = VerificationConfig(verify_rate=1.0, seed=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("ckpt") / "tiny-llama")


class Noisy(StageConversation):
    """Adds noise of 1e-3 of each token's RMS to its output."""

    async def compute(self, session, step, hidden):
        out = await super().compute(session, step, hidden)
        return out + 1e-3 * out.pow(2).mean(-1, keepdim=True).sqrt() * torch.randn_like(out)


class SkipsABlock(StageConversation):
    """Runs its span without its first block."""

    async def compute(self, session, step, hidden):
        server = self.server
        model = server.blocks.model

        def run():
            layers = model.layers
            model.layers = layers[1:]
            try:
                return server.run_chunks(hidden, step.chunks, session.cache, step.position)
            finally:
                model.layers = layers

        return await run_compute(run)


class Stale(StageConversation):
    """Replays its previous step's output instead of computing a new one."""

    previous: torch.Tensor | None = None

    async def compute(self, session, step, hidden):
        out = await super().compute(session, step, hidden)
        stale, self.previous = self.previous, out
        return out if stale is None else stale[:, -out.shape[1] :]


class ClaimsAnotherInput(StageConversation):
    """Commits to an input it was not given."""

    def claimed_input_hash(self, session, received):
        return bytes(len(received))


def proves_commitments(blob: bytes) -> bool:
    """Evidence a third party can check: the stage's signature covers its commitments."""
    kept = msgpack.unpackb(blob, raw=False)
    terms = Terms(*kept["terms"])
    commitments = [Commitment.from_bytes(c) for c in kept["commitments"]]
    return signed_chain(kept["peer"], terms, [tuple(s) for s in kept["steps"]], commitments)


def route_through(candidates: list[Candidate], *peers: StagePeer) -> list[Candidate]:
    by_id = {c.peer_id: c for c in candidates}
    return [by_id[p.peer_id] for p in peers]


async def settle(coordinator: Coordinator) -> None:
    with trio.fail_after(60):
        await coordinator.auditor.idle.wait()


@pytest.mark.parametrize("cheat", [Noisy, SkipsABlock, Stale, ClaimsAnotherInput])
async def test_a_cheating_stage_is_caught_excluded_and_routed_around(checkpoint: Path, cheat) -> None:
    async with swarm(SPEC, checkpoint, SPANS, verification=EVERY_STEP) as (peers, coordinator):
        a, b, c = peers
        candidates = await coordinator.candidates(SPEC.id)
        honest = await coordinator.generate(REQUEST, route_through(candidates, a, c))
        await settle(coordinator)
        assert coordinator.auditor.stats.failed == 0
        replace_handler(b, cheat)

        await coordinator.generate(REQUEST, route_through(candidates, a, b))
        await settle(coordinator)

        failed = [r for r in coordinator.auditor.stats.recent if r.outcome == "failed"]
        assert failed and {r.peer_id for r in failed} == {b.peer_id}, failed
        assert coordinator.reputation.score(b.peer_id).total < coordinator.verification.min_reputation
        assert proves_commitments(coordinator.reputation.evidence(b.peer_id)[0]["blob"])
        route = await coordinator.plan(SPEC.id)
        assert route is not None and b.peer_id not in [x.peer_id for x in route]
        again = await coordinator.generate(REQUEST)
        assert again.token_ids == honest.token_ids
        assert b.peer_id not in again.route


async def test_a_false_input_is_caught_by_the_chain_at_once(checkpoint: Path) -> None:
    """No recompute needed: the chain breaks on the first step, the step is retried on a route
    without the liar, and the user gets the honest tokens from that very request."""
    never = VerificationConfig(verify_rate=0.0)
    async with swarm(SPEC, checkpoint, SPANS, verification=never) as (peers, coordinator):
        a, b, c = peers
        candidates = await coordinator.candidates(SPEC.id)
        honest = await coordinator.generate(REQUEST, route_through(candidates, a, c))
        replace_handler(b, ClaimsAnotherInput)
        completion = await coordinator.generate(REQUEST, route_through(candidates, a, b))
        assert completion.token_ids == honest.token_ids
        assert completion.failovers == 1 and b.peer_id not in completion.route
        assert coordinator.reputation.score(b.peer_id).checks_failed >= 0.99
        assert coordinator.reputation.score(a.peer_id).checks_failed == 0
        assert [e["kind"] for e in coordinator.reputation.evidence(b.peer_id)] == ["chain"]


async def test_at_rate_a_tenth_an_always_cheating_stage_is_flagged_within_50_requests(
    checkpoint: Path,
) -> None:
    tenth = VerificationConfig(verify_rate=0.1, seed=7)
    async with swarm(SPEC, checkpoint, SPANS, verification=tenth) as (peers, coordinator):
        a, b, _ = peers
        replace_handler(b, Noisy)
        candidates = await coordinator.candidates(SPEC.id)
        requests = 0
        while coordinator.admissible(b.peer_id) and requests < 50:
            await coordinator.generate(REQUEST, route_through(candidates, a, b))
            await settle(coordinator)
            requests += 1
        assert not coordinator.admissible(b.peer_id), "never flagged in 50 requests"
        print(f"flagged after {requests} requests")
        completion = await coordinator.generate(REQUEST)
        assert b.peer_id not in completion.route


async def test_verification_never_changes_what_the_user_receives(checkpoint: Path) -> None:
    """Honest stages audited on every step: every check passes, and the tokens (and logits)
    are those of the same route without verification."""
    async with swarm(SPEC, checkpoint, SPANS, verification=EVERY_STEP) as (peers, coordinator):
        coordinator.draft_tokens = 0  # one step per token (speculation has its own audit test)
        a, b, _ = peers
        route = route_through(await coordinator.candidates(SPEC.id), a, b)
        request = dataclasses.replace(REQUEST, record_logits=True)
        audited = await coordinator.generate(request, route)
        await settle(coordinator)
        stats = coordinator.auditor.stats
        # every step of both stages chosen; B's six checked by one recompute on C, A unverifiable
        assert stats.chosen == 2 * 6 and stats.failed == 0 and stats.passed == 1, stats
        coordinator.auditor.config = VerificationConfig(verify_rate=0.0)
        plain = await coordinator.generate(request, route)
        assert audited.token_ids == plain.token_ids
        for x, y in zip(audited.logits, plain.logits, strict=True):
            assert torch.equal(x, y)


async def test_audits_over_a_float16_wire_keep_the_strict_float32_tolerance(checkpoint: Path) -> None:
    """Activations crossing hops as float16 round the claimed output and the verifier's alike
    (the recompute crosses the same wire), so float32 stages are still judged strictly."""
    spec = dataclasses.replace(SPEC, wire_dtype="float16")
    async with swarm(spec, checkpoint, SPANS, verification=EVERY_STEP) as (peers, coordinator):
        coordinator.draft_tokens = 0
        a, b, _ = peers
        route = route_through(await coordinator.candidates(SPEC.id), a, b)
        await coordinator.generate(REQUEST, route)
        await settle(coordinator)
        stats = coordinator.auditor.stats
        assert stats.failed == 0 and stats.passed == 1, stats
        assert [r.verdict.tolerance for r in stats.recent if r.verdict is not None] == ["fp32"]


def cheats(peer: StagePeer, route: list[Candidate]) -> bool:
    return peer.peer_id in [c.peer_id for c in route]


async def test_redundancy_takes_the_majority_and_audits_the_dissenter(checkpoint: Path) -> None:
    """Three disjoint routes, one with a stage skipping a block: the user gets the majority's
    (honest) tokens in that very request, and the dissenting stage is convicted."""
    spans = [(0, 3)] * 3 + [(3, 6)] * 4  # the seventh peer verifies
    three = VerificationConfig(verify_rate=0.0, redundancy=3)
    async with swarm(SPEC, checkpoint, spans, verification=three) as (peers, coordinator):
        honest_route = route_through(await coordinator.candidates(SPEC.id), peers[0], peers[6])
        coordinator.auditor.config = VerificationConfig(verify_rate=0.0)  # one route, for the reference
        honest = await coordinator.generate(REQUEST, honest_route)
        coordinator.auditor.config = three
        cheater = peers[4]
        replace_handler(cheater, SkipsABlock)
        primary = route_through(await coordinator.candidates(SPEC.id), peers[1], cheater)
        completion = await coordinator.generate(REQUEST, primary)  # the other two routes are planned
        await settle(coordinator)
        assert completion.token_ids == honest.token_ids
        failed = {r.peer_id for r in coordinator.auditor.stats.recent if r.outcome == "failed"}
        assert failed == {cheater.peer_id}
        assert not coordinator.admissible(cheater.peer_id)


async def test_a_colluding_pair_that_agrees_is_still_caught_by_an_outside_verifier(checkpoint: Path) -> None:
    """Two redundant routes whose second stages skip the same block agree with each other;
    audits (tier 3) have a peer on neither route recompute, and both are convicted."""
    spans = [(0, 3)] * 2 + [(3, 6)] * 3
    pair = VerificationConfig(verify_rate=1.0, redundancy=2, seed=2)
    async with swarm(SPEC, checkpoint, spans, verification=pair) as (peers, coordinator):
        outsider = peers[4]
        for colluder in peers[2:4]:
            replace_handler(colluder, SkipsABlock)
        for seconds in (0.001, 0.1):  # an erratic round trip: routes avoid the outsider (it stays
            coordinator.reputation.record_latency(outsider.peer_id, seconds)  # admissible to verify)
        route_a = route_through(await coordinator.candidates(SPEC.id), peers[0], peers[2])
        await coordinator.generate(REQUEST, route_a)
        await settle(coordinator)
        failed = [r for r in coordinator.auditor.stats.recent if r.outcome == "failed"]
        assert {r.peer_id for r in failed} == {peers[2].peer_id, peers[3].peer_id}
        assert {r.verifier for r in failed} == {outsider.peer_id}


async def test_probes_only_audits_synthetic_generations_on_the_users_route(checkpoint: Path) -> None:
    probes = VerificationConfig(verify_rate=1.0, probes_only=True, seed=3)
    async with swarm(SPEC, checkpoint, SPANS, verification=probes) as (peers, coordinator):
        a, b, _ = peers
        replace_handler(b, Noisy)
        route = route_through(await coordinator.candidates(SPEC.id), a, b)
        await coordinator.generate(REQUEST, route)
        await settle(coordinator)
        results = list(coordinator.auditor.stats.recent)
        assert coordinator.auditor.stats.probes == 1
        assert results and all(r.probe for r in results), "a user's own steps were audited"
        assert b.peer_id in {r.peer_id for r in results if r.outcome == "failed"}


class LyingVerifier(StageConversation):
    """Honest with users, but adds noise when its session has replayed history (a recompute)."""

    async def compute(self, session, step, hidden):
        out = await super().compute(session, step, hidden)
        return out + 0.1 * out if len(step.chunks) > 1 else out


async def test_a_lying_verifier_cannot_frame_an_honest_stage(checkpoint: Path) -> None:
    spans = [(0, 3)] + [(3, 6)] * 3
    async with swarm(SPEC, checkpoint, spans, verification=EVERY_STEP) as (peers, coordinator):
        a, honest, liar, second = peers
        replace_handler(liar, LyingVerifier)
        for seconds in (0.001, 0.1):  # the liar outranks the second verifier: it is asked first
            coordinator.reputation.record_latency(second.peer_id, seconds)
        await coordinator.generate(REQUEST, route_through(await coordinator.candidates(SPEC.id), a, honest))
        await settle(coordinator)
        assert coordinator.admissible(honest.peer_id)
        assert not coordinator.admissible(liar.peer_id)
        assert coordinator.reputation.evidence(liar.peer_id)[0]["kind"] == "verifier"
        assert second.peer_id in {r.verifier for r in coordinator.auditor.stats.recent}


async def test_hydra_status_shows_reputation_and_audits(checkpoint: Path) -> None:
    """The node's status (served over the real HTTP API) lists each peer's reputation and the
    audit counts, and ``hydra status`` prints the table with the cheater marked excluded."""
    async with swarm(SPEC, checkpoint, SPANS, verification=EVERY_STEP) as (peers, coordinator):
        a, b, _ = peers
        replace_handler(b, SkipsABlock)
        await coordinator.generate(REQUEST, route_through(await coordinator.candidates(SPEC.id), a, b))
        await settle(coordinator)
        port = free_port()
        app = create_app(coordinator.dht, coordinator.status, coordinator.catalog, coordinator)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_http, app, "127.0.0.1", port)
            status = (
                await trio.to_thread.run_sync(httpx.get, f"http://127.0.0.1:{port}/v1/network/status")
            ).json()
            shown = await trio.run_process(
                [sys.executable, "-m", "hydra.cli", "status", "--api", f"127.0.0.1:{port}"],
                capture_stdout=True,
                env={**os.environ, "COLUMNS": "200"},
            )
            nursery.cancel_scope.cancel()
        assert status["verification"]["audits"]["failed"] >= 1
        listed = {r["peer_id"]: r for r in status["reputation"]}
        assert not listed[b.peer_id]["admissible"] and listed[b.peer_id]["checks_failed"] > 0.99  # decaying
        text = shown.stdout.decode()
        assert "reputation" in text and any(
            b.peer_id[-12:] in line and "excluded" in line for line in text.splitlines()
        ), text


OPENED_BY: list[str] = []


class Recording(StageConversation):
    """An honest stage that notes who opens each session on it."""

    async def _open(self, request):
        OPENED_BY.append(self.remote)
        return await super()._open(request)


async def test_a_verifier_learns_the_span_input_but_not_who_asked(checkpoint: Path) -> None:
    """The recompute session reaches the verifier through the audited route's first stage,
    which relays it unchanged; the verifier never sees the coordinator."""
    async with swarm(SPEC, checkpoint, SPANS, verification=EVERY_STEP) as (peers, coordinator):
        a, b, c = peers
        replace_handler(c, Recording)
        await coordinator.generate(REQUEST, route_through(await coordinator.candidates(SPEC.id), a, b))
        await settle(coordinator)
        assert coordinator.auditor.stats.passed == 1
        assert OPENED_BY and set(OPENED_BY) == {a.peer_id}
        assert coordinator.peer_id not in OPENED_BY
