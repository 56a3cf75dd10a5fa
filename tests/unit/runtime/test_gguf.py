"""int4 stages of the embedded model hold the GGUF's own 4-bit codes: Q4_1 blocks decode to
codes, scales and minimums, and the layers built from them equal the float32 route's."""

import numpy as np
import torch
from torch import nn

from hydra.runtime.gguf import Q4_1_BLOCK, q4_1_grid, unpermute_rows
from hydra.runtime.quantize import Int4Linear
from hydra.runtime.shard import load_stage
from hydra.runtime.sources import gguf_of
from tests.unit.runtime.skips import needs_int4_layout

CPU = torch.device("cpu")


def q4_1_block(scale: float, low: float, codes: list[int]) -> bytes:
    """One Q4_1 block as ggml writes it: d, m (float16), then byte j = code j | code j+16 << 4."""
    packed = bytes(codes[j] | codes[j + 16] << 4 for j in range(16))
    return np.array([scale, low], dtype=np.float16).tobytes() + packed


def test_a_q4_1_block_decodes_to_its_codes_scale_and_minimum() -> None:
    first, second = list(range(16)) * 2, [15 - i % 16 for i in range(Q4_1_BLOCK)]
    raw = np.frombuffer(q4_1_block(0.5, -1.0, first) + q4_1_block(0.25, 2.0, second), dtype=np.uint8)
    codes, scale, low = q4_1_grid(raw.reshape(1, -1))
    assert codes.tolist() == [first + second]
    assert scale.tolist() == [[0.5, 0.25]] and low.tolist() == [[-1.0, 2.0]]


def test_unpermuting_restores_each_heads_rotary_halves() -> None:
    rows = torch.arange(8)  # one head of 8 rows stored as pairs (0, 4), (1, 5), ...
    stored = torch.stack([rows[:4], rows[4:]], dim=1).reshape(8)
    assert unpermute_rows(stored, heads=1).tolist() == rows.tolist()


@needs_int4_layout
def test_int4_stages_of_the_embedded_model_hold_the_shipped_codes(smollm2_checkpoint) -> None:
    assert gguf_of(smollm2_checkpoint) is not None, "the converted checkpoint forgot its GGUF"
    shipped = load_stage(smollm2_checkpoint, 0, 2, torch.float32, CPU, "int4")
    full = load_stage(smollm2_checkpoint, 0, 2, torch.float32, CPU)
    linears = [(n, m) for n, m in full.model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 7
    for name, layer in linears:
        direct = shipped.model.get_submodule(name)
        assert isinstance(direct, Int4Linear), name
        assert torch.equal(direct.codes(), Int4Linear(layer.weight, None).codes()), name
        # the float32 checkpoint is these very codes dequantized: equal up to bfloat16 scales
        weight = layer.weight.detach()
        error = (direct.dequantized().float() - weight).norm() / weight.norm()
        assert float(error) < 5e-3, name
