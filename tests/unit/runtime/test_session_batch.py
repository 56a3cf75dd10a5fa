"""One-token steps of sessions of different lengths, run as one batch, compute what each
computes alone: bit for bit with the int8/int4 kernels (they work row by row), within 1e-5
relative in float32 (the projections' matrix products block differently for 5 rows than
for 1); and every session's cache (keys and values, or Qwen3.5's recurrent state and
convolution window) ends where it would have alone."""

import copy
from pathlib import Path

import pytest
import torch

from hydra.runtime.shard import load_stage
from tests.tiny_models import save_tiny_model, tiny_llama_config, tiny_qwen35_config

CPU = torch.device("cpu")
FLOAT32_RTOL = 1e-5
LENGTHS = [2, 3, 7, 12, 30]  # prompt lengths of the sessions in the batch
STEPS = 4


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    ("config", "quantization"),
    [(tiny_llama_config, "none"), (tiny_llama_config, "int8"), (tiny_llama_config, "int4"),
     (tiny_qwen35_config, "none"), (tiny_qwen35_config, "int8")],
)
def test_batched_steps_match_each_session_alone(tmp_path: Path, config, quantization: str) -> None:
    cfg = config()
    path = save_tiny_model(cfg, tmp_path / "tiny")
    blocks = load_stage(path, 0, cfg.num_hidden_layers, torch.float32, CPU, quantization)
    torch.manual_seed(0)
    batched = [blocks.new_cache() for _ in LENGTHS]
    for cache, length in zip(batched, LENGTHS, strict=True):
        blocks.forward(torch.randn(1, length, blocks.hidden_size), cache, 0)
    alone = copy.deepcopy(batched)
    for step in range(STEPS):
        tokens = [torch.randn(1, 1, blocks.hidden_size) for _ in LENGTHS]
        positions = [length + step for length in LENGTHS]
        together = blocks.forward_batch(tokens, batched, positions)
        for i, (token, cache, position) in enumerate(zip(tokens, alone, positions, strict=True)):
            want = blocks.forward(token, cache, position)
            assert together[i].shape == want.shape == (1, 1, blocks.hidden_size)
            if quantization == "none":
                assert relative(together[i], want) < FLOAT32_RTOL, f"session {i}, step {step}"
            else:
                assert torch.equal(together[i], want), f"session {i}, step {step}"
    probe = torch.randn(1, 1, blocks.hidden_size)  # the caches: same next output from each
    for i, (mine, theirs) in enumerate(zip(batched, alone, strict=True)):
        position = LENGTHS[i] + STEPS
        after_batching = blocks.forward(probe, mine, position)
        assert relative(after_batching, blocks.forward(probe, theirs, position)) < FLOAT32_RTOL


def test_a_batch_of_one_is_the_plain_step(tmp_path: Path) -> None:
    cfg = tiny_llama_config()
    blocks = load_stage(save_tiny_model(cfg, tmp_path / "tiny"), 0, 6, torch.float32, CPU)
    cache = blocks.new_cache()
    blocks.forward(torch.randn(1, 4, blocks.hidden_size), cache, 0)
    twin = copy.deepcopy(cache)
    token = torch.randn(1, 1, blocks.hidden_size)
    (output,) = blocks.forward_batch([token], [cache], [4])
    assert torch.equal(output, blocks.forward(token, twin, 4))
