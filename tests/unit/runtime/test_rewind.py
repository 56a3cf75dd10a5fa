"""Rewinding a session into its last step (speculative decoding's rollback): the cache ends
as if only the kept part of the step had run, for attention blocks (keys and values cut) and
for Qwen3.5's recurrent blocks (state restored from before the step, kept part run again).
Checked by the next step's output against a session that never ran the dropped tokens."""

from pathlib import Path

import pytest
import torch

from hydra.runtime.shard import load_stage
from tests.tiny_models import save_tiny_model, tiny_llama_config, tiny_qwen35_config

CPU = torch.device("cpu")
RTOL = 1e-5  # float32: the kept part runs in a different chunk shape than it first did


@pytest.mark.parametrize(
    ("config", "layers"), [(tiny_llama_config, 6), (tiny_qwen35_config, 4), (tiny_qwen35_config, 3)]
)
@pytest.mark.parametrize("kept", [0, 1, 3, 5])
def test_a_rewound_session_continues_as_if_the_dropped_tokens_never_ran(
    tmp_path: Path, config, layers: int, kept: int
) -> None:
    """(Qwen3.5 blocks 0:3 are all recurrent; 0:4 mix them with an attention block.)"""
    blocks = load_stage(save_tiny_model(config(), tmp_path / "tiny"), 0, layers, torch.float32, CPU)
    torch.manual_seed(0)
    prompt, step, after = (torch.randn(1, n, blocks.hidden_size) for n in (7, 5, 1))
    drafted, plain = blocks.new_cache(), blocks.new_cache()
    blocks.forward(prompt, drafted, 0)
    blocks.forward(prompt, plain, 0)
    undo = blocks.undo_point(drafted, step)
    assert (undo is None) == (not blocks.recurrent)
    blocks.forward(step, drafted, 7)  # five tokens, of which ``kept`` are accepted
    blocks.rewind(drafted, 7, 12, 7 + kept, undo)
    if kept:
        blocks.forward(step[:, :kept], plain, 7)
    got = blocks.forward(after, drafted, 7 + kept)
    want = blocks.forward(after, plain, 7 + kept)
    assert float((got - want).abs().max() / want.abs().max()) < RTOL
