"""A GGUF's 4-bit blocks loaded straight into ``Int4Linear`` layers.

The embedded SmolLM2 ships as Q4_1: per block of 32 weights along a row, a float16 scale ``d``
and minimum ``m`` and 32 four-bit codes ``q``, the weight being ``d * q + m``. That is the
asymmetric grid ``Int4Linear`` computes with (groups of 32), so ``--quantization int4`` takes
the shipped codes as they are instead of dequantizing to float32 and quantizing again: a
stage reads ~60 MB instead of ~425 MB, and holds the very bits the model was published in.

A converted checkpoint remembers its GGUF (``hydra.runtime.sources.gguf_of``); tensors of
another type, or a checkpoint from elsewhere, take the float32 path.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import PretrainedConfig

from hydra.runtime.quantize import Int4Linear

Q4_1_BLOCK = 32
Q4_1_BYTES = 20  # float16 d, float16 m, 16 bytes of codes
LLAMA_LINEARS = {  # GGUF tensor name in block i -> the module under ``layers.i``
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def q4_1_grid(raw: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes [rows, columns] (uint8), scales and minimums [rows, columns / 32] (float32) of a
    Q4_1 tensor's bytes [rows, blocks * 20]. In a block, byte j holds the codes of weights j
    (low nibble) and j + 16 (high nibble)."""
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, Q4_1_BYTES)
    halves = blocks[..., :4].copy().view(np.float16).astype(np.float32)  # [rows, blocks, 2]
    packed = blocks[..., 4:]
    codes = np.concatenate([packed & 0xF, packed >> 4], axis=-1).reshape(rows, -1)
    return torch.from_numpy(codes), torch.from_numpy(halves[..., 0]), torch.from_numpy(halves[..., 1])


def unpermute_rows(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo the row order llama.cpp's converter gives query and key projections (it pairs
    rotary halves per head); what transformers' GGUF loader does to the float weights."""
    half = tensor.shape[0] // heads // 2
    return tensor.reshape(heads, half, 2, *tensor.shape[1:]).transpose(1, 2).reshape(tensor.shape)


def int4_linears_from_gguf(
    gguf: Path, start: int, end: int, config: PretrainedConfig
) -> dict[str, Int4Linear] | None:
    """``layers.<i - start>.<module>`` -> its layer built from the GGUF's codes, for blocks
    [start, end); None unless every linear weight there is Q4_1 of a Llama-style model."""
    from gguf import GGMLQuantizationType, GGUFReader  # transformers' own GGUF dependency

    if config.model_type not in {"llama", "mistral"}:
        return None
    tensors = {t.name: t for t in GGUFReader(gguf).tensors}
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    layers: dict[str, Int4Linear] = {}
    for block in range(start, end):
        for name, module in LLAMA_LINEARS.items():
            tensor = tensors.get(f"blk.{block}.{name}.weight")
            if tensor is None or tensor.tensor_type != GGMLQuantizationType.Q4_1:
                return None
            codes, scale, low = q4_1_grid(np.asarray(tensor.data))
            if name in heads:
                codes, scale, low = (unpermute_rows(t, heads[name]) for t in (codes, scale, low))
            layers[f"layers.{block - start}.{module}"] = Int4Linear.from_grid(codes, scale, low)
    return layers
