"""The comparison on real tensors: no false flags over 1,000+ honest checks (thread counts,
chunk shapes, fp32 against bf16 replicas; SmolLM2 and the tiny Qwen3.5 hybrid), and at
``--verify-rate 0.1`` an always-cheating stage flagged within 50 requests in at least 99% of
200 seeded trials, using the auditor's own choice of steps and the real comparison."""

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hydra.coordinator.audit import requests_until_flagged
from hydra.models.catalog import MixedPrecisionBounds, load_catalog
from hydra.runtime.shard import StageBlocks, load_head, load_stage
from hydra.verification.compare import STRICT, Verdict, calibrate, compare, tolerance_for
from hydra.verification.config import VerificationConfig
from tests.tiny_models import save_tiny_model, tiny_qwen35_config

PROMPT = 24
DECODE = {"smollm2": 60, "qwen35": 150}
TRIALS = 200
STEPS_PER_REQUEST = 9  # a prompt and eight generated tokens
# as calibrated in the catalog for SmolLM2; detected per check for the random tiny model
MASSIVE = {"smollm2": load_catalog().resolve("smollm2").massive_channels, "qwen35": None}


@dataclass
class Run:
    """One span's output per step for one fixed input sequence."""

    steps: list[torch.Tensor]


def run_span(blocks: StageBlocks, inputs: list[torch.Tensor], threads: int = 1, split: int = 1) -> Run:
    """Feed ``inputs`` step by step (the first split into ``split`` chunks, as a replayed or
    batched prefill would be) and keep each step's output in float32."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cache, position, outputs = blocks.new_cache(), 0, []
        for i, hidden in enumerate(inputs):
            pieces = torch.tensor_split(hidden, split, dim=1) if i == 0 else (hidden,)
            out = torch.cat(
                [
                    blocks.forward(p, cache, position + sum(q.shape[1] for q in pieces[:j]))
                    for j, p in enumerate(pieces)
                ],
                dim=1,
            )
            outputs.append(out.float())
            position += hidden.shape[1]
        return Run(outputs)
    finally:
        torch.set_num_threads(previous)


def step_inputs(checkpoint: Path, decode: int, seed: int = 0) -> list[torch.Tensor]:
    head = load_head(checkpoint, torch.float32, torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(
        0, min(head.config.vocab_size, 5000), (PROMPT + decode,), generator=generator
    ).tolist()
    embedded = head.embed(ids)
    return [embedded[:, :PROMPT], *(embedded[:, i : i + 1] for i in range(PROMPT, PROMPT + decode))]


@pytest.fixture(scope="module")
def qwen35_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_qwen35_config(), tmp_path_factory.mktemp("ckpt") / "tiny-qwen35")


@pytest.fixture(scope="module")
def checkpoints(smollm2_checkpoint: Path, qwen35_checkpoint: Path) -> dict[str, tuple[Path, int]]:
    return {"smollm2": (smollm2_checkpoint, 30), "qwen35": (qwen35_checkpoint, 8)}


@pytest.fixture(scope="module")
def smollm2_first_span(smollm2_checkpoint: Path) -> tuple[StageBlocks, list[torch.Tensor], Run]:
    blocks = load_stage(smollm2_checkpoint, 0, 15, torch.float32, torch.device("cpu"))
    inputs = step_inputs(smollm2_checkpoint, DECODE["smollm2"])
    return blocks, inputs, run_span(blocks, inputs)


def honest_checks(
    name: str, checkpoint: Path, layers: int, seed: int, mixed: MixedPrecisionBounds | None
) -> Iterator[tuple[str, Verdict]]:
    """Every step of two half-model spans (the last through the head), each compared between
    an fp32 reference and three honest replicas: 2 threads, the prefill in 3 chunks, bf16."""
    inputs = step_inputs(checkpoint, DECODE[name], seed)
    head = load_head(checkpoint, torch.float32, torch.device("cpu"))
    for start, end in ((0, layers // 2), (layers // 2, layers)):
        blocks = load_stage(checkpoint, start, end, torch.float32, torch.device("cpu"))
        reference = run_span(blocks, inputs)
        bf16 = load_stage(checkpoint, start, end, torch.bfloat16, torch.device("cpu"))
        replicas = {
            "fp32, 2 threads": (run_span(blocks, inputs, threads=2), "float32"),
            "fp32, prefill in 3 chunks": (run_span(blocks, inputs, split=3), "float32"),
            "bf16 replica": (run_span(bf16, inputs), "bfloat16"),
        }
        logits = head.all_logits if end == layers else None
        for label, (replica, dtype) in replicas.items():
            tolerance = tolerance_for("float32", dtype, "float32", mixed=mixed)
            for claimed, expected in zip(replica.steps, reference.steps, strict=True):
                yield (
                    f"{name} {start}:{end} {label}",
                    compare(claimed, expected, tolerance, MASSIVE[name], logits),
                )
        inputs = reference.steps  # the next span's inputs


def test_no_false_flags_in_1000_honest_checks(checkpoints) -> None:
    """SmolLM2 is judged with its catalog bounds; the random tiny hybrid, which has none, with
    bounds calibrated here on other tokens (seeds 1-3) than the ones checked (seed 0)."""
    calibration = [
        verdict
        for seed in (1, 2, 3)
        for label, verdict in honest_checks("qwen35", *checkpoints["qwen35"], seed=seed, mixed=None)
        if "bf16" in label
    ]
    bounds = {"smollm2": load_catalog().resolve("smollm2").mixed_precision, "qwen35": calibrate(calibration)}
    checks, worst = 0, {}
    for name, (checkpoint, layers) in checkpoints.items():
        for label, verdict in honest_checks(name, checkpoint, layers, seed=0, mixed=bounds[name]):
            assert verdict.passed, f"{label}: {verdict.reason}"
            checks += 1
            worst[label] = max(worst.get(label, 0.0), verdict.metrics["rel_l2"])
    print(f"{checks} honest checks; bounds {bounds}; worst relative L2 per replica: {worst}")
    assert checks >= 1000


def noisy(run: Run, scale: float) -> Run:
    generator = torch.Generator().manual_seed(1)
    return Run(
        [
            s + scale * s.pow(2).mean(-1, keepdim=True).sqrt() * torch.randn(s.shape, generator=generator)
            for s in run.steps
        ]
    )


def stale(run: Run) -> Run:
    return Run([run.steps[0], *(prev[:, -1:] for prev in run.steps[:-1])])


def skipped_block(blocks: StageBlocks, inputs: list[torch.Tensor]) -> Run:
    layers = blocks.model.layers
    blocks.model.layers = layers[1:]
    try:
        return run_span(blocks, inputs)
    finally:
        blocks.model.layers = layers


@pytest.mark.parametrize("kind", ["noise 1e-3", "skipped block", "stale output"])
def test_always_cheating_stage_flagged_within_50_requests_in_99_percent_of_trials(
    smollm2_first_span, kind: str
) -> None:
    blocks, inputs, honest = smollm2_first_span
    cheat = {
        "noise 1e-3": lambda: noisy(honest, 1e-3),
        "skipped block": lambda: skipped_block(blocks, inputs),
        "stale output": lambda: stale(honest),
    }[kind]()
    massive = MASSIVE["smollm2"]

    def check(i: int) -> bool:  # the real comparison, as a verifier of the same precision runs it
        return compare(cheat.steps[i], honest.steps[i], STRICT, massive).passed

    outcomes = [
        requests_until_flagged(
            check, len(honest.steps), VerificationConfig(0.1, seed=seed), STEPS_PER_REQUEST, 50
        )
        for seed in range(TRIALS)
    ]
    flagged = [n for n in outcomes if n is not None]
    print(
        f"{kind}: flagged in {len(flagged)}/{TRIALS} trials, median after {statistics.median(flagged)} "
        f"request(s), worst {max(flagged)}"
    )
    assert len(flagged) >= 0.99 * TRIALS
