"""Weight-only quantization: each quantized layer computes exactly what its dequantized
weights give (in bfloat16), stays close to float32, a tied head keeps one copy, and modes the
machine cannot run are refused up front."""

from pathlib import Path

import pytest
import torch
from torch import nn

from hydra.errors import ConfigError
from hydra.runtime.quantize import (
    INT4_GROUP,
    INT4_INNER_K_TILES,
    NF4_BLOCK,
    NF4_LEVELS,
    PREFILL_ROWS,
    Int4Linear,
    Int8Linear,
    NF4Linear,
    check_quantization,
    int4_layout,
    quantize_linears,
    unpack_int4,
)
from hydra.runtime.shard import REFINED_LOGITS, load_head, load_stage
from tests.tiny_models import save_tiny_model, tiny_llama_config
from tests.unit.runtime.skips import needs_int4_layout

CPU = torch.device("cpu")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("make", [Int8Linear, Int4Linear, NF4Linear])
@pytest.mark.parametrize("bias", [False, True])
def test_a_quantized_layer_is_close_to_float32_and_keeps_the_input_dtype(make, bias) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(128, 96, bias=bias)
    x = torch.randn(3, 5, 128)
    quantized = make(layer.weight, layer.bias)
    with torch.inference_mode():
        got, want = quantized(x), layer(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert relative(got, want) < (0.02 if make is Int8Linear else 0.15)


def test_nf4_stores_each_weight_as_its_nearest_normal_quantile() -> None:
    torch.manual_seed(4)
    weight = torch.randn(32, 2 * NF4_BLOCK)
    layer = NF4Linear(weight, None)
    blocks = weight.reshape(32, 2, NF4_BLOCK)
    normalized = blocks / blocks.abs().amax(-1, keepdim=True)
    nearest = (normalized[..., None] - torch.tensor(NF4_LEVELS)).abs().argmin(-1)
    assert torch.equal(layer.codes().long(), nearest.reshape(32, -1))
    assert layer.weight.numel() == weight.numel() // 2  # two codes a byte
    x = torch.randn(3, 2 * NF4_BLOCK)
    with torch.inference_mode():
        assert relative(layer(x), x.bfloat16().float() @ layer.dequantized().float().T) < 1e-2


def test_int8_computes_with_its_dequantized_weights() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(64, 32, bias=False)
    quantized = Int8Linear(layer.weight, None)
    x = torch.randn(4, 64)
    exact = x.bfloat16().float() @ quantized.dequantized().T
    with torch.inference_mode():
        assert relative(quantized(x), exact) < 1e-2  # bfloat16 products and rounding only


@needs_int4_layout
def test_int4_codes_unpack_from_torchs_packing() -> None:
    codes = torch.randint(0, 16, (1536, 576), dtype=torch.int32, generator=torch.Generator().manual_seed(2))
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, INT4_INNER_K_TILES)
    layout = int4_layout()
    assert layout is not None
    assert torch.equal(unpack_int4(packed, 1536, 576, layout).to(torch.int32), codes)


@needs_int4_layout
def test_int4_prefill_expands_the_weights_the_kernel_computes_with() -> None:
    """Many rows run one bfloat16 GEMM on the unpacked weights, a few the packed kernel: the
    same weights either way (to bfloat16 rounding)."""
    torch.manual_seed(3)
    layer = nn.Linear(256, 192)
    quantized = Int4Linear(layer.weight, layer.bias)
    x = torch.randn(PREFILL_ROWS + 4, 256)
    with torch.inference_mode():
        many = quantized(x)
        few = torch.cat([quantized(row[None]) for row in x])
    assert relative(many, few) < 1e-2
    assert relative(quantized.dequantized().float(), layer.weight.detach()) < 0.15


def test_int4_needs_whole_groups() -> None:
    with pytest.raises(ConfigError, match=str(INT4_GROUP)):
        Int4Linear(torch.randn(8, INT4_GROUP + 1), None)


def test_every_linear_of_a_stage_is_replaced(tmp_path: Path) -> None:
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny")
    full = load_stage(path, 0, 6, torch.float32, CPU)
    for mode, kind in (("int8", Int8Linear), ("int4", Int4Linear), ("nf4", NF4Linear)):
        blocks = load_stage(path, 0, 6, torch.float32, CPU, mode)
        assert not any(isinstance(m, nn.Linear) for m in blocks.model.modules())
        assert sum(isinstance(m, kind) for m in blocks.model.modules()) == 6 * 7
        assert blocks.precision == f"float32+{mode}" and blocks.model_hash != full.model_hash
        hidden = torch.randn(1, 7, 64)
        got = blocks.forward(hidden, blocks.new_cache(), 0)
        want = full.forward(hidden, full.new_cache(), 0)
        assert relative(got, want) < (0.05 if mode == "int8" else 0.3)


def test_a_tied_int8_head_holds_one_copy_of_the_embedding(tmp_path: Path) -> None:
    config = tiny_llama_config()
    config.tie_word_embeddings = True
    path = save_tiny_model(config, tmp_path / "tied")
    head = load_head(path, torch.float32, CPU, "int8")
    assert head.lm_head is head.embed_tokens.head  # the table the embedding reads
    full = load_head(path, torch.float32, CPU)
    ids = [1, 5, 9, 200]
    assert relative(head.embed(ids), full.embed(ids)) < 0.02
    hidden = torch.randn(1, 3, 64)
    assert relative(head.all_logits(hidden), full.all_logits(hidden)) < 0.05


def test_modes_are_checked_before_anything_loads() -> None:
    with pytest.raises(ConfigError, match="one of"):
        check_quantization("int3", CPU)
    with pytest.raises(ConfigError, match="CPU only"):
        check_quantization("int4", torch.device("cuda"))
    for mode in ("none", "int8", "nf4"):
        check_quantization(mode, torch.device("cuda"))
    assert quantize_linears(nn.Linear(4, 4), "none").__class__ is nn.Linear


def test_a_quantized_heads_top_logits_are_exact_float32(tmp_path: Path) -> None:
    """The int8 kernel rounds its output to bfloat16 (steps of 0.125 at a logit of 25: near-ties
    become ties); the head recomputes its top logits from the same int8 weights in float32."""
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny")
    head = load_head(path, torch.float32, CPU, "int8")
    hidden = torch.randn(1, 3, 64)
    with torch.inference_mode():
        normed = head.norm(hidden[:, -1])[0]
        rounded = head.lm_head(normed[None])[0].float()
        logits = head.next_logits(hidden)
    exact = head.lm_head.dequantized() @ normed
    top = exact.topk(REFINED_LOGITS // 4).indices  # well inside what the head refines
    assert torch.allclose(logits[top], exact[top], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(rounded[top], exact[top], rtol=1e-5, atol=1e-5)
    assert int(logits.argmax()) == int(exact.argmax())
