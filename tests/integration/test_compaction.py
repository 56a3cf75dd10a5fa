"""KV cache compaction across real peers (libp2p hosts on 127.0.0.1, the DHT, tiny Llama):

- a compacted three-stage pipeline gives the tokens of the same compactions run in one
  process (every stage compacts its own blocks, at the steps the coordinator orders, with the
  per-block and per-head budgets of phase 3);
- a stage lost after its cache was compacted is replaced by one that rebuilds the very same
  compacted cache (history and compaction orders replayed): same tokens, same logits;
- a session longer than a stage's ``--cache-gb`` allows is refused without compaction and
  runs to the end with it (``auto``: compacted online, as often as it needs, phase 4)."""

import math
from pathlib import Path

import pytest
import torch
import trio

from hydra.compaction.plan import CompactionPlan
from hydra.coordinator.generation import Completion, Delta, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.coordinator.routing import NoRoute
from hydra.runtime.shard import load_head, load_stage
from hydra.stage.limits import StageLimits
from hydra.verification.config import VerificationConfig
from tests.peers import coordinator_for, spec_for, stage_peer, swarm
from tests.tiny_models import byte_tokenizer, save_tiny_model, tiny_llama_config

SPEC = spec_for("tiny-compacting", 6)
PROMPT = "Attention Matching keeps what the queries look at, and the mass they give it. " * 2
NEW_TOKENS = 24
RATIO = 2.0
SHARES = {1: (0.5,), 4: (1.0, 0.25)}  # phase 3: block 1 keeps half the target, block 4's 2nd head a quarter


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("tiny"))


def compacted_in_one_process(
    checkpoint: Path, prompt: str, new_tokens: int
) -> tuple[list[int], torch.Tensor]:
    """``on``'s schedule in one process: the prompt, compacted by RATIO with SHARES, then
    greedy steps; their tokens and logits."""
    blocks = load_stage(checkpoint, 0, 6, torch.float32, torch.device("cpu"))
    head = load_head(checkpoint, torch.float32, torch.device("cpu"))
    ids = byte_tokenizer()(prompt)["input_ids"]
    cache = blocks.new_cache(compacting=True)
    logits = [head.next_logits(blocks.forward(head.embed(ids), cache, 0))]
    token = int(logits[0].argmax())
    blocks.compact(cache, math.floor(len(ids) / RATIO), fractions=[SHARES.get(b, (1.0,)) for b in range(6)])
    tokens = [token]
    for position in range(len(ids), len(ids) + new_tokens - 1):
        logits.append(head.next_logits(blocks.forward(head.embed(tokens[-1:]), cache, position)))
        tokens.append(int(logits[-1].argmax()))
    return tokens, torch.stack(logits)


async def test_a_compacted_pipeline_matches_one_process_and_survives_failover(checkpoint: Path) -> None:
    request = GenerationRequest(
        SPEC.id, prompt=PROMPT, params=SamplingParams(max_tokens=NEW_TOKENS), record_logits=True
    )
    spans = [(0, 2), (2, 4), (2, 4), (4, 6)]  # two copies of the middle blocks
    async with swarm(SPEC, checkpoint, spans, verification=VerificationConfig(verify_rate=0.0)) as (
        peers, coordinator,
    ):
        coordinator.compaction = CompactionPlan(mode="on", ratio=RATIO, phase=3, shares=SHARES)
        coordinator.draft_tokens = 0  # steps of one token, as in the one-process run
        undisturbed = await coordinator.generate(request)
        assert [p.stage.compactions for p in peers if p.stage.steps_served] == [1, 1, 1]
        stopped, tokens = None, 0
        with trio.fail_after(60):
            async for event in coordinator.stream(request):
                tokens += len(event.token_ids) if isinstance(event, Delta) else 0
                if stopped is None and tokens == 3:  # the second step compacted the prompt
                    (stopped,) = [p for p in peers[1:3] if p.stage.sessions]
                    assert stopped.stage.compactions == 2  # this generation's, and the first's
                    await stopped.stop()
                done = event
    tokens, logits = compacted_in_one_process(checkpoint, PROMPT, NEW_TOKENS)
    assert undisturbed.token_ids == tokens
    split = (torch.stack(undisturbed.logits) - logits).abs().max()
    assert split < 1e-4, f"stages compacted otherwise than one process does (logits differ by {split})"
    assert isinstance(done, Completion) and done.failovers == 1
    assert stopped is not None and stopped.peer_id not in done.route
    replacement = next(p for p in peers[1:3] if p is not stopped)
    assert replacement.stage.compactions >= 1, "the replacement compacted the replayed history"
    assert done.token_ids == undisturbed.token_ids
    drift = (torch.stack(done.logits) - torch.stack(undisturbed.logits)).abs().max()
    assert drift < 1e-5, f"the rebuilt compacted cache is not the lost one (logits differ by {drift})"


async def test_a_session_past_the_stage_cache_runs_only_compacted(checkpoint: Path) -> None:
    """500 tokens (200 prompt, 300 generated; the model reads 512) need 1.0 MB of cache and
    audit room on this stage, which has 1 MB for sessions (a fifth of it kept for priority
    ones): refused uncompacted; granted some 240 entries compacting, and compacted as often
    as the session fills them."""
    prompt = "".join(chr(ord("a") + i % 26) for i in range(200))
    limits = StageLimits(cache_bytes=1 << 20)
    async with (
        stage_peer(SPEC, checkpoint, (0, 6), limits=limits) as peer,
        coordinator_for(SPEC, checkpoint, peer.multiaddr, verification=VerificationConfig(verify_rate=0.0)) as
        coordinator,
    ):
        with trio.fail_after(15):
            while not await coordinator.candidates(SPEC.id):
                await trio.sleep(0.1)
        coordinator.compaction = CompactionPlan(mode="auto", ratio=4.0)
        params = SamplingParams(max_tokens=300)
        with pytest.raises(NoRoute, match="no cache room"):
            exact = GenerationRequest(SPEC.id, prompt=prompt, params=params, kv_compaction="off")
            await coordinator.generate(exact)
        done = await coordinator.generate(GenerationRequest(SPEC.id, prompt=prompt, params=params))
        assert len(done.token_ids) == 300 and done.finish_reason == "length"
        assert peer.stage.compactions >= 3, "compacted between the prompt's pieces, then online"
        with trio.fail_after(5):  # the close reaches the stage: its reservation is let go
            while peer.stage.sessions:
                await trio.sleep(0.05)
        assert peer.stage.reserved_bytes == 0
