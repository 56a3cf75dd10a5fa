"""Pipelines over real libp2p hosts on 127.0.0.1 whose middle stage runs its blocks with MLX
(``hydra.runtime.mlx_blocks``, MLX's CPU build here) and the others with PyTorch, against
the same model run in one process with transformers.

Greedy token ids must be identical and logits agree within the PyTorch pipelines' LOGIT_ATOL
(1e-3): the MLX span moves hidden states by ~4e-6 relative, and the logits by at most 1.1e-6
on the tiny Llama and 6.5e-5 on SmolLM2 (measured; a PyTorch-only split: ~7e-5). The MLX
stage also batches concurrent sessions' steps, restores kept prompt prefixes, and passes
every strict float32 audit a PyTorch verifier makes."""

from pathlib import Path

import httpx
import pytest
import torch
import trio

pytest.importorskip("mlx_lm", reason="mlx and mlx-lm are not installed (pip install 'mlx[cpu]' mlx-lm)")

from hydra.coordinator.generation import Completion, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.runtime.mlx_blocks import MlxBlocks
from hydra.verification.config import VerificationConfig
from tests.integration.test_pipeline_exactness import BATCH_LOGIT_ATOL, assert_pipeline_matches
from tests.peers import CPU, Compute, spec_for, stage_peer, swarm
from tests.swarm import node
from tests.tiny_models import save_tiny_model, tiny_catalog, tiny_llama_config

SPANS = [(0, 2), (2, 4), (4, 6)]
MLX_MIDDLE = Compute(CPU.device, CPU.dtype, mlx_spans=((2, 4),))
CONCURRENT = 8


@pytest.fixture
def tiny_llama(tmp_path: Path) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")


async def test_tiny_llama_with_an_mlx_middle_stage_matches_single_process(tiny_llama: Path) -> None:
    await assert_pipeline_matches(tiny_llama, 6, SPANS, MLX_MIDDLE)


@pytest.mark.slow
async def test_smollm2_with_an_mlx_middle_stage_matches_single_process(smollm2_checkpoint: Path) -> None:
    on = Compute(CPU.device, CPU.dtype, mlx_spans=((10, 20),))
    await assert_pipeline_matches(smollm2_checkpoint, 30, [(0, 10), (10, 20), (20, 30)], on)


def request(spec_id: str, prompt: str) -> GenerationRequest:
    return GenerationRequest(spec_id, prompt=prompt, params=SamplingParams(max_tokens=24), record_logits=True)


async def test_an_mlx_stage_batches_sessions_and_reuses_kept_prefixes(tiny_llama: Path) -> None:
    """Concurrent generations keep the tokens each gets alone while the MLX stage runs their
    decode steps as batches; prompts sent again start from the prefixes the MLX stage kept."""
    spec = spec_for("tiny", 6)
    prompts = [f"{i}: " + "to be or not to be " * (4 + 2 * i) for i in range(CONCURRENT)]  # 2+ prefix blocks
    async with swarm(spec, tiny_llama, SPANS, MLX_MIDDLE) as (peers, coordinator):
        mlx = peers[1].stage
        assert isinstance(mlx.blocks, MlxBlocks)
        alone = [await coordinator.generate(request(spec.id, p)) for p in prompts]
        assert mlx.prefixes is not None and len(mlx.prefixes) > 0
        together: dict[int, Completion] = {}

        async def generate(i: int) -> None:
            together[i] = await coordinator.generate(request(spec.id, prompts[i]))

        async with trio.open_nursery() as nursery:
            for i in range(CONCURRENT):
                nursery.start_soon(generate, i)
        assert mlx.batcher.stats.largest > 1, "concurrent steps never shared a batch"
        assert mlx.prefixes.hits > 0, "no prompt started from a kept prefix"
    for i, done in enumerate(alone):
        assert together[i].token_ids == done.token_ids, f"generation {i}: tokens changed"
        diff = (torch.stack(together[i].logits) - torch.stack(done.logits)).abs().max()
        assert diff < BATCH_LOGIT_ATOL, f"generation {i}: logits differ by {diff}"


async def test_a_pytorch_verifier_passes_every_step_of_an_mlx_stage(tiny_llama: Path) -> None:
    """A fourth peer serves the MLX stage's span with PyTorch; routed through the MLX stage,
    every step of it is recomputed there and judged at the strict float32 tolerance."""
    spec = spec_for("tiny", 6)
    every_step = VerificationConfig(verify_rate=1.0, seed=3)
    async with (
        swarm(spec, tiny_llama, SPANS, MLX_MIDDLE, every_step) as (peers, coordinator),
        stage_peer(spec, tiny_llama, SPANS[1], (peers[0].multiaddr,)) as verifier,
    ):
        with trio.fail_after(15):
            while len(candidates := await coordinator.candidates(spec.id)) < len(peers) + 1:
                await trio.sleep(0.1)
        by_id = {c.peer_id: c for c in candidates}
        route = [by_id[p.peer_id] for p in peers]
        await coordinator.generate(request(spec.id, "The capital of France is"), route)
        with trio.fail_after(60):
            await coordinator.auditor.idle.wait()
    recent = coordinator.auditor.stats.recent
    judged = [r for r in recent if r.peer_id == peers[1].peer_id]
    assert coordinator.auditor.stats.failed == 0, [r.reason for r in recent if r.outcome == "failed"]
    assert judged and all(r.outcome == "passed" and r.verifier == verifier.peer_id for r in judged)


@pytest.mark.slow
def test_hydra_run_with_runtime_backend_mlx_serves_with_mlx(tiny_llama: Path, tmp_path: Path) -> None:
    """The flag, end to end: a ``hydra run`` process serving the tiny Llama with MLX answers
    a completion through its own MLX stage, with the greedy tokens PyTorch gives."""
    catalog = tiny_catalog(tmp_path / "catalog.json", "tiny", {"tiny": 1_000})
    procs = {}
    for backend in ("mlx", "pytorch"):
        procs[backend] = node(tmp_path, backend, [], "--model-path", str(tiny_llama), "--runtime-backend",
                              backend, "--draft-tokens", "0")
        procs[backend].env["HYDRA_CATALOG"] = str(catalog)
        procs[backend].start()
    try:
        replies = {}
        for backend, proc in procs.items():
            proc.ready(timeout=120)
            assert proc.get("/v1/network/status")["stage"]["backend"] == backend
            reply = httpx.post(f"{proc.url}/v1/completions", timeout=60, json={
                "model": "tiny", "prompt": "abc", "max_tokens": 8, "temperature": 0})
            assert reply.status_code == 200, reply.text
            replies[backend] = reply.json()["choices"][0]["text"]
        assert replies["mlx"] == replies["pytorch"] and replies["mlx"]
    finally:
        for proc in procs.values():
            proc.stop()
