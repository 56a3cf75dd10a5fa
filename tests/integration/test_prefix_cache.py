"""The stages' prefix cache over real hosts (tiny Llama, 3 peers): a prompt that starts like
an earlier one restores the shared blocks instead of recomputing them and gives the tokens
(and, within PREFIX_LOGIT_ATOL, the logits) of a cold run; a stage that evicted the blocks
answers ``prefix_miss`` and the generation falls back to the whole prompt; a shared system
prompt is reused across coordinators, the rest of a prompt only by the coordinator that sent
it."""

from pathlib import Path

import pytest
import torch
import trio

from hydra.coordinator.generation import Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from protocols.inference import PREFIX_BLOCK
from tests.peers import coordinator_for, spec_for, swarm
from tests.tiny_models import save_tiny_model, tiny_llama_config

PREFIX_LOGIT_ATOL = 1e-4  # the restored blocks were computed in a longer chunk than a cold run's
LONG = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 4  # 4 whole blocks


def ask(spec_id: str, prompt: str) -> GenerationRequest:
    return GenerationRequest(spec_id, prompt=prompt, params=SamplingParams(max_tokens=12), record_logits=True)


def reused_blocks(peers) -> list[int]:
    return [p.stage.prefixes.hits for p in peers]


async def cold(coordinator: Coordinator, request: GenerationRequest):
    """The same request with the route's prefix memory forgotten: computed from the start."""
    coordinator.prefixes = type(coordinator.prefixes)()
    return await coordinator.generate(request)


async def test_a_repeated_prefix_is_restored_not_recomputed_and_gives_the_same_tokens(tmp_path: Path) -> None:
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny")
    spec = spec_for("tiny", 6)
    async with swarm(spec, path, [(0, 2), (2, 4), (4, 6)]) as (peers, coordinator):
        first = await coordinator.generate(ask(spec.id, LONG + "Q1"))
        assert reused_blocks(peers) == [0, 0, 0]
        assert all(p.stage.prefixes.kept == len(LONG) // PREFIX_BLOCK for p in peers)
        second = ask(spec.id, LONG + "Another question")
        warm = await coordinator.generate(second)
        assert reused_blocks(peers) == [len(LONG) // PREFIX_BLOCK] * 3, "the shared blocks were recomputed"
        reference = await cold(coordinator, second)
        assert warm.token_ids == reference.token_ids
        diff = (torch.stack(warm.logits) - torch.stack(reference.logits)).abs().max()
        assert diff < PREFIX_LOGIT_ATOL, f"logits differ by {diff}"
        assert first.token_ids  # (the first request's own output is the cold path's)

        for peer in peers:  # every stage forgets: the next reuse is refused and recomputed
            peer.stage.prefixes.make_room(0)
        again = await coordinator.generate(second)
        assert again.token_ids == reference.token_ids
        assert reused_blocks(peers) == [len(LONG) // PREFIX_BLOCK] * 3  # no restore happened


async def test_a_system_prompt_is_shared_across_coordinators_and_nothing_else_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another coordinator's request restores the blocks of the system prompt both use, and
    not the rest, though its prompt is the same: those blocks are salted per coordinator."""
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny")
    spec = spec_for("tiny", 6)
    system = "Be brief and kind. " * 12  # 228 bytes: 3 whole blocks
    monkeypatch.setattr(Coordinator, "system_tokens", lambda self, model, request, prompt: len(system))
    prompt = system + LONG[:200]
    async with (
        swarm(spec, path, [(0, 3), (3, 6)]) as (peers, coordinator),
        coordinator_for(spec, path, peers[0].multiaddr) as other,
    ):
        with trio.fail_after(15):
            while len(await other.candidates(spec.id)) < len(peers):
                await trio.sleep(0.1)
        first = await coordinator.generate(ask(spec.id, prompt))
        assert reused_blocks(peers) == [0, 0]
        theirs = await other.generate(ask(spec.id, prompt))
        assert reused_blocks(peers) == [len(system) // PREFIX_BLOCK] * 2
        assert theirs.token_ids == first.token_ids
