"""Sharded pipelines over real libp2p hosts on 127.0.0.1, found through the DHT, against the
same model run in one process with transformers (and, quantized, against the same quantized
blocks and head run in one process).

Greedy token ids must be identical; logits agree within LOGIT_ATOL (fp32 on CPU: the split
changes nothing but the order of a few float reductions, measured max ~7e-5 on SmolLM2)."""

import dataclasses
from pathlib import Path

import pytest
import torch
import trio
from transformers import AutoModelForCausalLM, AutoTokenizer

from hydra.coordinator.generation import Completion, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.coordinator.speculation import PromptLookup
from hydra.models.catalog import Catalog
from hydra.runtime.precision import precision
from hydra.runtime.shard import load_head, load_stage, text_config
from hydra.verification.config import VerificationConfig
from tests.peers import CPU, Compute, spec_for, swarm
from tests.tiny_models import VOCAB, save_tiny_model, tiny_llama_config, tiny_qwen35_config

LOGIT_ATOL = 1e-3
NEW_TOKENS = 64

PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4, 5,",
    "def fibonacci(n):",
]


def reference(
    checkpoint: Path, prompt: str, new_tokens: int, on: Compute = CPU
) -> tuple[list[int], torch.Tensor]:
    """Greedy ids and per-step logits (float32, CPU) from plain transformers in this process."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=on.dtype).to(on.device).eval()
    tokens = AutoTokenizer.from_pretrained(checkpoint)(prompt, return_tensors="pt")
    ids = tokens["input_ids"].to(on.device)
    out = model.generate(
        ids, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
        return_dict_in_generate=True, pad_token_id=0,
    )
    return out.sequences[0, ids.shape[1]:].tolist(), torch.stack(out.logits)[:, 0].float().cpu()


async def assert_pipeline_matches(
    checkpoint: Path, num_layers: int, spans: list[tuple[int, int]], on: Compute = CPU,
    atol: float = LOGIT_ATOL,
) -> None:
    spec = spec_for(f"test-{checkpoint.name}", num_layers)
    async with swarm(spec, checkpoint, spans, on) as (peers, coordinator):
        for prompt in PROMPTS:
            want_ids, want_logits = reference(checkpoint, prompt, NEW_TOKENS, on)
            done = await coordinator.generate(
                GenerationRequest(
                    spec.id, prompt=prompt, params=SamplingParams(max_tokens=NEW_TOKENS),
                    record_logits=True,
                )
            )
            got = done.token_ids
            assert got == want_ids[: len(got)], f"{prompt!r}: token ids diverge"
            assert len(got) == len(want_ids) or done.finish_reason == "stop"
            diff = (torch.stack(done.logits) - want_logits[: len(done.logits)]).abs().max()
            assert diff < atol, f"{prompt!r}: logits differ by {diff}"
            assert done.route == [p.peer_id for p in peers], "the route should use every span"
        assert all(p.stage.steps_served > 0 for p in peers)


@pytest.mark.slow
async def test_smollm2_three_peers_match_single_process(smollm2_checkpoint: Path) -> None:
    await assert_pipeline_matches(smollm2_checkpoint, 30, [(0, 10), (10, 20), (20, 30)])


async def test_tiny_llama_three_peers_match_single_process(tmp_path: Path) -> None:
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    await assert_pipeline_matches(path, 6, [(0, 2), (2, 4), (4, 6)])


async def test_tiny_qwen35_hybrid_three_peers_match_single_process(tmp_path: Path) -> None:
    """Stage one holds only linear-attention (recurrent) blocks; its state lives in the
    session cache like a KV cache does."""
    path = save_tiny_model(tiny_qwen35_config(), tmp_path / "tiny-qwen35")
    await assert_pipeline_matches(path, 8, [(0, 3), (3, 5), (5, 8)])


CONCURRENT = 8
BATCH_LOGIT_ATOL = 1e-4  # float32 rows batched vs alone: a few ulps through the projections


@pytest.mark.parametrize(
    ("config", "layers", "spans"),
    [(tiny_llama_config, 6, [(0, 2), (2, 4), (4, 6)]),
     (tiny_qwen35_config, 8, [(0, 3), (3, 5), (5, 8)])],
)
async def test_concurrent_generations_share_steps_and_keep_their_tokens(
    tmp_path: Path, config, layers: int, spans: list[tuple[int, int]]
) -> None:
    """Eight generations at once through three peers: every stage runs their decode steps as
    batches, the coordinator decides their tokens together, and each generation gets the
    tokens (and, within BATCH_LOGIT_ATOL, the logits) it gets alone."""
    path = save_tiny_model(config(), tmp_path / "tiny")
    spec = spec_for("tiny", layers)
    prompts = [f"{i}: " + "to be or not to be " * i for i in range(CONCURRENT)]  # lengths differ

    def request(prompt: str) -> GenerationRequest:
        return GenerationRequest(spec.id, prompt=prompt, params=SamplingParams(max_tokens=24),
                                 record_logits=True)

    async with swarm(spec, path, spans) as (peers, coordinator):
        alone = [await coordinator.generate(request(p)) for p in prompts]
        assert all(p.stage.batcher.stats.largest == 1 for p in peers), "one generation batched"
        together: dict[int, Completion] = {}

        async def generate(i: int) -> None:
            together[i] = await coordinator.generate(request(prompts[i]))

        async with trio.open_nursery() as nursery:
            for i in range(CONCURRENT):
                nursery.start_soon(generate, i)
        for i, done in enumerate(alone):
            assert together[i].token_ids == done.token_ids, f"generation {i}: tokens changed"
            diff = (torch.stack(together[i].logits) - torch.stack(done.logits)).abs().max()
            assert diff < BATCH_LOGIT_ATOL, f"generation {i}: logits differ by {diff}"
        for peer in peers:
            assert peer.stage.batcher.stats.largest > 1, "concurrent steps never shared a batch"
        assert coordinator.decisions.stats.largest > 1


def guessing(plain: list[int], prompt_tokens: int):
    """A drafter that guesses greedy's own continuation, every third guess wrong: drafts are
    accepted and rejected at known places, whatever the (random) model writes."""

    def draft(lookup: PromptLookup, k: int) -> list[int]:
        done = len(lookup.tokens) - prompt_tokens
        guesses = plain[done : done + k]
        return [(g + 1) % VOCAB if i % 3 == 2 else g for i, g in enumerate(guesses)]

    return draft


@pytest.mark.parametrize(
    ("config", "layers", "spans", "verify"),
    [(tiny_llama_config, 6, [(0, 2), (2, 4), (4, 6)] * 2, 1.0),  # a second copy verifies audits
     (tiny_qwen35_config, 8, [(0, 3), (3, 5), (5, 8)], 0.0)],
)
async def test_speculative_decoding_gives_the_greedy_tokens_and_passes_audits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config, layers: int, spans: list[tuple[int, int]],
    verify: float,
) -> None:
    """Drafted steps, some drafts rejected and rewound on every stage (Qwen3.5's recurrent
    blocks restored), give the tokens and logits of plain greedy decoding; audits of the
    drafted steps judge what the sessions kept and pass."""
    path = save_tiny_model(config(), tmp_path / "tiny")
    spec = spec_for("tiny", layers)
    prompt = "the cat sat on the mat and the cat ran"
    params = SamplingParams(max_tokens=40)
    request = GenerationRequest(spec.id, prompt=prompt, params=params, record_logits=True)
    verification = VerificationConfig(verify_rate=verify, seed=3)
    async with swarm(spec, path, spans, verification=verification) as (_, coordinator):
        coordinator.draft_tokens = 0
        plain = await coordinator.generate(request)
        coordinator.draft_tokens = 6
        if config is tiny_llama_config:  # its text repeats: real prompt-lookup drafts
            looked_up = await coordinator.generate(request)
            assert looked_up.token_ids == plain.token_ids and looked_up.drafted > 0
        monkeypatch.setattr(PromptLookup, "draft", guessing(plain.token_ids, len(prompt.encode())))
        drafted = await coordinator.generate(request)
        assert drafted.token_ids == plain.token_ids
        diff = (torch.stack(drafted.logits) - torch.stack(plain.logits)).abs().max()
        assert diff < BATCH_LOGIT_ATOL, f"logits differ by {diff}"
        assert plain.drafted == 0 and drafted.drafted > drafted.accepted > 0
        with trio.fail_after(60):
            await coordinator.auditor.idle.wait()
        stats = coordinator.auditor.stats
        assert stats.failed == 0, [r.reason for r in stats.recent]
        assert verify == 0 or stats.passed > 0


@pytest.mark.parametrize(
    ("config", "layers", "seed"), [(tiny_llama_config, 6, 0), (tiny_qwen35_config, 8, 1)]
)
async def test_a_catalog_draft_model_drafts_and_the_tokens_stay_greedys(
    tmp_path: Path, config, layers: int, seed: int
) -> None:
    """The catalog names a draft model: the coordinator runs it whole to draft when prompt
    lookup has nothing. Same weights as the target (seed 0): its drafts are nearly all
    accepted; other weights (a Qwen3.5 hybrid, whose recurrent state the drafter rewinds):
    mostly rejected. Either way the tokens are greedy's."""
    path = save_tiny_model(config(), tmp_path / "tiny")
    draft_path = save_tiny_model(config(), tmp_path / "draft", seed=seed)
    spec, draft = spec_for("tiny", layers), spec_for("tiny-draft", layers)
    request = GenerationRequest(spec.id, prompt="Once upon a time", params=SamplingParams(max_tokens=32))
    async with swarm(spec, path, [(0, layers // 2), (layers // 2, layers)]) as (_, coordinator):
        coordinator.catalog = Catalog(spec.id, (dataclasses.replace(spec, draft_model=draft.id), draft))
        coordinator.checkpoints[draft.id] = draft_path
        coordinator.draft_tokens = 0
        plain = await coordinator.generate(request)
        coordinator.draft_tokens, coordinator.models = 4, {}  # reloaded with its draft model
        drafted = await coordinator.generate(request)
    assert drafted.token_ids == plain.token_ids
    assert drafted.drafted > 0
    if seed == 0:
        assert drafted.accepted >= 0.8 * drafted.drafted
    else:
        assert drafted.accepted < drafted.drafted


async def test_seeded_sampling_is_reproducible_across_runs_and_splits(tmp_path: Path) -> None:
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    spec = spec_for("tiny-llama", 6)

    def request(seed: int) -> GenerationRequest:
        params = SamplingParams(max_tokens=32, temperature=0.9, top_p=0.95, top_k=100, seed=seed,
                                repetition_penalty=1.1)
        return GenerationRequest(spec.id, prompt="Once upon a time", params=params)

    per_split = []
    for spans in ([(0, 2), (2, 4), (4, 6)], [(0, 3), (3, 6)], [(0, 6)]):
        async with swarm(spec, path, spans) as (_, coordinator):
            first = await coordinator.generate(request(7))
            again = await coordinator.generate(request(7))
            other = await coordinator.generate(request(8))
        assert first.token_ids == again.token_ids, f"{spans}: same seed, different tokens"
        assert first.token_ids != other.token_ids, "a different seed should sample differently"
        per_split.append(first.token_ids)
    assert per_split[0] == per_split[1] == per_split[2]


@torch.inference_mode()
def one_process_reference(checkpoint: Path, prompt: str, new_tokens: int, on: Compute) -> list[int]:
    """Greedy ids from all blocks and the head computed ``on`` in this process."""
    layers = text_config(checkpoint).num_hidden_layers
    blocks = load_stage(checkpoint, 0, layers, on.dtype, on.device, on.quantization, on.compile)
    head = load_head(checkpoint, on.dtype, on.device, on.quantization)
    ids = AutoTokenizer.from_pretrained(checkpoint)(prompt)["input_ids"]
    cache, position, out = blocks.new_cache(), 0, []
    for _ in range(new_tokens):
        step = ids if not out else out[-1:]
        hidden = blocks.forward(head.embed(step), cache, position)
        position += len(step)
        out.append(int(head.next_logits(hidden).argmax()))
    return out


@pytest.mark.parametrize(
    ("mode", "compile"), [("int8", False), ("int4", False), ("nf4", False), ("int4", True)]
)
async def test_each_runtime_mode_on_three_peers_matches_the_same_mode_in_one_process(
    tmp_path: Path, mode: str, compile: bool
) -> None:
    """Quantized and compiled stages give the tokens of the same runtime in one process (a
    compiled span computes bit for bit what the same blocks compute inside a longer one)."""
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    spec = spec_for("tiny-llama", 6)
    on = Compute(CPU.device, CPU.dtype, mode, compile)
    async with swarm(spec, path, [(0, 2), (2, 4), (4, 6)], on) as (peers, coordinator):
        assert {p.stage.blocks.precision for p in peers} == {precision("float32", mode)}
        assert all(p.stage.blocks.compile == compile for p in peers)
        for prompt in PROMPTS:
            done = await coordinator.generate(
                GenerationRequest(spec.id, prompt=prompt, params=SamplingParams(max_tokens=24))
            )
            want = one_process_reference(path, prompt, 24, on)
            assert done.token_ids == want[: len(done.token_ids)], f"{prompt!r}: token ids diverge"
