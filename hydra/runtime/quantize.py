"""Weight-only quantization of a stage's (and the client head's) linear layers.

``int8`` and ``int4`` are for CPUs, where they make decode fast; ``nf4`` (QLoRA's 4-bit
NormalFloat) and ``int8`` are for CUDA, where they make a model fit: there each product
expands the layer's weights to bfloat16 first, as bitsandbytes does without its fused kernels.

Decode on a CPU reads every weight once per token, so its speed is the bytes it reads: fp32
weights cost 4 bytes a parameter, ``int8`` 1 (per-output-channel scales), ``int4`` half a byte
(asymmetric, a scale and zero point per group of 32). Both run torch's packed kernels, which on
a CPU are fast with bfloat16 activations (AMX/AVX-512) and slow with float32 ones, so a
quantized layer computes in bfloat16 and hands back the dtype it was given: what flows between
layers, and on the wire, keeps its precision.

Measured on this repo's 2-core CI machine (30 SmolLM2 blocks, one token, weights out of
cache): float32 17.7 ms, int8 9.3 ms, int4 5.2 ms of matrix products. Prefill is compute-bound
instead: there quantized weights are expanded to bfloat16 for one GEMM (a 512-row product takes
0.8 ms against 2.6 ms in float32), as the packed kernels are slower than float32 there.
"""

from collections.abc import Callable
from functools import cache

import torch
from torch import nn
from torch.nn import functional

from hydra.errors import ConfigError

QUANTIZATIONS = ("none", "int8", "int4", "nf4")
CPU_ONLY = frozenset({"int4"})  # torch's packed int4 kernel here is the CPU one
INT4_GROUP = 32
INT4_INNER_K_TILES = 2  # the packing torch's int4 kernels expect for this group size
PREFILL_ROWS = 16  # from this many rows at once, int8 weights are expanded for a GEMM


def blocks_of(weight: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """``weight`` [out, in] in float32 as [out, in / size, size]: the runs of inputs that
    share a scale."""
    out_features, in_features = weight.shape
    if in_features % size:
        raise ConfigError(f"{mode} needs input sizes divisible by {size}, not {in_features}")
    return weight.detach().float().reshape(out_features, -1, size)


class Int8Linear(nn.Module):
    """``y = x W^T (+ b)`` with W stored as int8 and one scale per output channel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        w = weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("weight", torch.round(w / scales[:, None]).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    def dequantized(self) -> torch.Tensor:
        """The float32 weights this layer computes with (for tests and references)."""
        return self.weight.float() * self.scales.float()[:, None]

    def exact_outputs(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Outputs ``rows`` of ``x`` [in] in float32 throughout: the kernel rounds its input and
        output to bfloat16, whose steps (0.125 at a logit of 25) make near-ties exact ties."""
        weights = self.weight[rows].float() * self.scales[rows].float()[:, None]
        y = weights @ x.float()
        return y if self.bias is None else y + self.bias[rows].float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if flat.shape[0] >= PREFILL_ROWS or not flat.is_cpu:  # bfloat16 weights, one fast GEMM
            weights = self.weight.to(torch.bfloat16) * self.scales[:, None]
            y = functional.linear(flat, weights)
        else:  # a token or a few: bound by the bytes read, which the int8 kernel keeps low
            y = torch._weight_int8pack_mm(flat, self.weight, self.scales)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int4Linear(nn.Module):
    """``y = x W^T (+ b)`` with W in 4 bits: per group of ``INT4_GROUP`` inputs a scale and a
    zero point (asymmetric), packed for torch's CPU int4 kernel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        groups = blocks_of(weight, INT4_GROUP, "int4")
        low, high = groups.amin(-1), groups.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-12)
        codes = torch.clamp(torch.round((groups - low[..., None]) / scale[..., None]), 0, 15)
        self._hold(codes.reshape(weight.shape), scale, low, bias)

    @classmethod
    def from_grid(
        cls, codes: torch.Tensor, scale: torch.Tensor, low: torch.Tensor, bias: torch.Tensor | None = None
    ) -> "Int4Linear":
        """The layer whose weights are ``codes * scale + low`` (codes [out, in] in 0..15, scale
        and low [out, in / INT4_GROUP]): 4-bit weights that come quantized already."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._hold(codes, scale, low, bias)
        return layer

    def _hold(
        self, codes: torch.Tensor, scale: torch.Tensor, low: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        out_features, in_features = codes.shape
        packed = torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), INT4_INNER_K_TILES)
        # the kernel computes (code - 8) * scale + zero: zero is the group's value at code 8
        scales_and_zeros = torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1)
        self.register_buffer("weight", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros.contiguous().to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.in_features, self.out_features = in_features, out_features

    def codes(self) -> torch.Tensor | None:
        """The 4-bit codes [out, in] (uint8), or None where this CPU's packing is not known."""
        layout = int4_layout()
        if layout is None or self.out_features % layout[1]:
            return None
        return unpack_int4(self.weight, self.out_features, self.in_features, layout)

    def dequantized(self) -> torch.Tensor | None:
        """The weights this layer computes with, in bfloat16 (None: see ``codes``)."""
        codes = self.codes()
        if codes is None:
            return None
        scale, zero = self.scales_and_zeros.unbind(-1)  # [in / group, out] each
        groups = codes.reshape(self.out_features, -1, INT4_GROUP).to(torch.bfloat16) - 8
        return (groups * scale.T[..., None] + zero.T[..., None]).reshape(codes.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        weights = self.dequantized() if flat.shape[0] >= PREFILL_ROWS else None
        if weights is not None:  # compute-bound: bfloat16 weights run the fast GEMM
            y = functional.linear(flat, weights)
        else:
            y = torch._weight_int4pack_mm_for_cpu(flat, self.weight, INT4_GROUP, self.scales_and_zeros)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


Int4Layout = tuple[str, int]  # how torch's CPU kernel interleaves rows: ("halves" | "pairs", block)
INT4_LAYOUTS: tuple[Int4Layout, ...] = (("halves", 64), ("halves", 32), ("pairs", 32))


def unpack_int4(packed: torch.Tensor, rows: int, columns: int, layout: Int4Layout) -> torch.Tensor:
    """Codes [rows, columns] from torch's CPU int4 packing, which depends on the vector width
    it was built for: per block of rows and per column, a byte holds two rows' codes, row j
    and j + block/2 ("halves": AVX-512 with blocks of 64, AVX2 with 32) or rows 2j and 2j+1
    ("pairs": no vector unit)."""
    kind, block = layout
    blocks = packed.reshape(rows // block, columns, block // 2)
    low, high = blocks & 0xF, blocks >> 4
    if kind == "halves":
        by_column = torch.cat([low, high], dim=-1)
    else:
        by_column = torch.stack([low, high], dim=-1).reshape(rows // block, columns, block)
    return by_column.transpose(1, 2).reshape(rows, columns)


@cache
def int4_layout() -> Int4Layout | None:
    """The packing this machine's torch uses, found by packing known codes (None: unknown,
    so int4 prefill stays on the packed kernel)."""
    probe = torch.randint(0, 16, (128, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    packed = torch._convert_weight_to_int4pack_for_cpu(probe, INT4_INNER_K_TILES)
    for layout in INT4_LAYOUTS:
        if torch.equal(unpack_int4(packed, 128, 64, layout).to(torch.int32), probe):
            return layout
    return None


NF4_LEVELS = (  # quantiles of a unit normal, scaled to [-1, 1] (Dettmers et al., QLoRA, 2023)
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)
NF4_BLOCK = 64


class NF4Linear(nn.Module):
    """``y = x W^T (+ b)`` with W in 4-bit NormalFloat: per block of ``NF4_BLOCK`` inputs, the
    index of the nearest of 16 normal quantiles to each weight over the block's largest
    magnitude. Each product expands the weights to bfloat16 (memory, not speed: on a CPU
    ``int4`` decodes faster)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        blocks = blocks_of(weight, NF4_BLOCK, "nf4")
        absmax = blocks.abs().amax(-1, keepdim=True).clamp(min=1e-12)
        levels = torch.tensor(NF4_LEVELS, device=weight.device)
        codes = torch.bucketize(blocks / absmax, (levels[1:] + levels[:-1]) / 2).to(torch.uint8)
        pairs = codes.reshape(out_features, in_features // 2, 2)
        self.register_buffer("weight", pairs[..., 0] | (pairs[..., 1] << 4))
        self.register_buffer("absmax", absmax.squeeze(-1))
        self.register_buffer("levels", levels.to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.in_features, self.out_features = in_features, out_features

    def codes(self) -> torch.Tensor:
        """The level index of every weight, [out, in] (uint8)."""
        return torch.stack([self.weight & 0xF, self.weight >> 4], dim=-1).reshape(self.out_features, -1)

    def dequantized(self) -> torch.Tensor:
        """The weights this layer computes with, in bfloat16."""
        blocks = self.levels[self.codes().long()].reshape(self.out_features, -1, NF4_BLOCK)
        return (blocks * self.absmax[..., None].to(torch.bfloat16)).reshape(self.out_features, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = functional.linear(flat, self.dequantized())
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int8Embedding(nn.Module):
    """An embedding table read from an ``Int8Linear``'s weights (a tied LM head), so the two
    hold one copy: each looked-up row is dequantized with its channel's scale."""

    def __init__(self, head: Int8Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.head = head
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = functional.embedding(ids, self.head.weight)
        return (rows.float() * self.head.scales.float()[ids][..., None]).to(self.dtype)


QUANTIZED: dict[str, Callable[[torch.Tensor, torch.Tensor | None], nn.Module]] = {
    "int8": Int8Linear,
    "int4": Int4Linear,
    "nf4": NF4Linear,
}


def resolve_quantization(mode: str, device: torch.device, recommended: str) -> str:
    """``auto``: the catalog's recommendation for the model on a CPU (where weight bytes set
    decode speed), unquantized on an accelerator (its kernels here are CPU-only)."""
    if mode != "auto":
        return mode
    return recommended if device.type == "cpu" and recommended in QUANTIZATIONS else "none"


def check_quantization(mode: str, device: torch.device) -> None:
    if mode not in QUANTIZATIONS:
        raise ConfigError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}, not {mode!r}")
    if mode in CPU_ONLY and device.type != "cpu":
        raise ConfigError(f"--quantization {mode} runs on the CPU only; use nf4 or int8 on {device}")


def quantize_linears(module: nn.Module, mode: str) -> nn.Module:
    """Replace every ``nn.Linear`` under ``module`` by its ``mode`` counterpart, in place."""
    if mode == "none":
        return module
    make = QUANTIZED[mode]
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child.weight, child.bias))
        else:
            quantize_linears(child, mode)
    return module
