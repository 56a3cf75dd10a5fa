"""A session's cache reservation covers what its cache really holds: KV per token for
attention blocks, and the fixed recurrent state of linear-attention (Gated DeltaNet) blocks."""

from pathlib import Path

import pytest
import torch

from hydra.runtime.memory import cache_bytes_per_token, session_state_bytes
from hydra.runtime.shard import load_stage
from tests.tiny_models import save_tiny_model, tiny_qwen35_config

TOKENS = 12


def held_bytes(cache) -> int:
    """Every tensor a transformers cache holds, by walking its layers' attributes."""
    total = 0
    for layer in cache.layers:
        for value in vars(layer).values():
            tensors = value.values() if isinstance(value, dict) else [value]
            total += sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
    return total


@pytest.mark.parametrize("span", [(0, 3), (0, 4), (3, 8)])  # linear only, mixed, mixed
def test_the_reservation_covers_the_cache(tmp_path: Path, span: tuple[int, int]) -> None:
    path = save_tiny_model(tiny_qwen35_config(), tmp_path / "tiny-qwen35")
    blocks = load_stage(path, *span, torch.float32, torch.device("cpu"))
    cache = blocks.new_cache()
    blocks.forward(torch.randn(1, TOKENS - 1, blocks.hidden_size), cache, 0)
    blocks.forward(torch.randn(1, 1, blocks.hidden_size), cache, TOKENS - 1)
    per_token = cache_bytes_per_token(blocks.config, blocks.dtype)
    reserved = TOKENS * per_token + session_state_bytes(blocks.config)
    held = held_bytes(cache)
    assert held > 0 and reserved >= held, f"reserved {reserved} bytes, the cache holds {held}"
    assert reserved <= 2 * held  # and not wildly more
