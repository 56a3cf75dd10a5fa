"""A peer's slice of a model, and the coordinator's client head, built from a checkpoint.

Both reuse transformers' own model classes so a pipeline computes exactly what the model
computes in one process: a stage is the family's base model (``LlamaModel``,
``Qwen3_5TextModel``, ...) built from a config sliced to blocks [start, end) — with
``layer_types`` sliced too, so Qwen3.5's hybrid linear/full-attention blocks keep their kind —
with no embedding table and an identity final norm. Its forward is the family's forward,
masks and rotary embeddings included. The client head is the same class with zero blocks:
embeddings, final norm and LM head. Modules are built on the meta device and only the needed
tensors are read from disk.
"""

import copy
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transformers.cache_utils import Cache, DynamicCache, LinearAttentionCacheLayerMixin

from hydra.compaction.cache import CompactingLayer, compacting_cache, head_budgets, is_compacting
from hydra.compaction.matching import Selection
from hydra.errors import ConfigError
from hydra.runtime.checkpoint import Checkpoint
from hydra.runtime.compiled import MIN_POSITION, compiled
from hydra.runtime.gguf import int4_linears_from_gguf
from hydra.runtime.memory import head_dim, release_freed_memory
from hydra.runtime.precision import precision
from hydra.runtime.quantize import Int8Embedding, Int8Linear, check_quantization, quantize_linears
from hydra.runtime.session_batch import SESSIONS_ATTENTION, SessionsCache, batched_step_masks
from hydra.runtime.sources import gguf_of

SUPPORTED_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "qwen3_5_text"})
REFINED_LOGITS = 64  # a quantized head recomputes this many top logits in float32 (~0.1 ms)


class UnsupportedModel(ConfigError):
    """A checkpoint of a model family the runtime cannot slice."""


def text_config(checkpoint_dir: Path) -> PretrainedConfig:
    config = AutoConfig.from_pretrained(checkpoint_dir).get_text_config()
    if config.model_type not in SUPPORTED_FAMILIES:
        supported = ", ".join(sorted(SUPPORTED_FAMILIES))
        raise UnsupportedModel(f"model type {config.model_type!r} is not supported ({supported})")
    return config


def span_config(checkpoint_dir: Path, start: int, end: int) -> PretrainedConfig:
    """The text config of ``checkpoint_dir`` sliced to blocks [start, end), which it must have."""
    config = text_config(checkpoint_dir)
    if not 0 <= start < end <= config.num_hidden_layers:
        raise ConfigError(f"layers {start}:{end} outside 0:{config.num_hidden_layers}")
    return slice_config(config, start, end)


def slice_config(config: PretrainedConfig, start: int, end: int) -> PretrainedConfig:
    sliced = copy.deepcopy(config)
    sliced.num_hidden_layers = end - start
    if getattr(config, "layer_types", None) is not None:
        sliced.layer_types = list(config.layer_types[start:end])
    return sliced


def _meta_causal_lm(config: PretrainedConfig) -> nn.Module:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _materialize(module: nn.Module, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Replace meta parameters by ``tensors`` (moved to ``device``: ``assign`` keeps the
    given tensors' device); every parameter must be provided."""
    module.to_empty(device=device)  # buffers the checkpoint does not hold
    moved: dict[int, torch.Tensor] = {}  # tied weights (embeddings = LM head) stay one tensor
    for tensor in tensors.values():
        if id(tensor) not in moved:
            moved[id(tensor)] = tensor.to(device)
    on_device = {name: moved[id(tensor)] for name, tensor in tensors.items()}
    missing, unexpected = module.load_state_dict(on_device, strict=False, assign=True)
    if missing or unexpected:
        raise ConfigError(f"checkpoint mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _cut_attention(cache: Cache, tokens: int) -> None:
    """Drop the last ``tokens`` positions of every attention block's keys and values."""
    for layer in cache.layers:
        if tokens and not isinstance(layer, LinearAttentionCacheLayerMixin):
            layer.crop(-tokens)


@dataclass
class Undo:
    """Copies of a session's recurrent (linear-attention) states before a step, and the step's
    input: a rewind restores the states and runs the kept part of the step again."""

    conv: dict[int, torch.Tensor]
    recurrent: dict[int, torch.Tensor]
    step: torch.Tensor

    @classmethod
    def of(cls, cache: Cache, step: torch.Tensor) -> "Undo":
        conv, recurrent = {}, {}
        for index, layer in enumerate(cache.layers):
            if isinstance(layer, LinearAttentionCacheLayerMixin) and layer.has_previous_state[0]:
                conv[index] = layer.conv_states[0].clone()
                recurrent[index] = layer.recurrent_states[0].clone()
        return cls(conv, recurrent, step)

    def restore(self, cache: Cache) -> None:
        for index, layer in enumerate(cache.layers):
            if isinstance(layer, LinearAttentionCacheLayerMixin):
                if index in self.conv:
                    layer.conv_states[0].copy_(self.conv[index])
                    layer.recurrent_states[0].copy_(self.recurrent[index])
                else:  # the step was the session's first: back to no state at all
                    layer.reset()


class SpanBlocks:
    """What a span's blocks are alike in whichever backend runs them (``StageBlocks``,
    ``hydra.runtime.mlx_blocks.MlxBlocks``): precision, width, warm-up and decode speed."""

    config: PretrainedConfig
    dtype: torch.dtype
    device: torch.device
    quantization: str
    new_cache: Callable[[], Any]
    forward: Callable[[torch.Tensor, Any, int], torch.Tensor]

    @property
    def precision(self) -> str:
        """What verification compares it as: its dtype, and its quantization if any."""
        return precision(str(self.dtype).removeprefix("torch."), self.quantization)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    def warm_up(self) -> tuple[Any, int]:
        """A few decode steps on a scratch session: first-call allocations, and the compile of
        the decode step when it is compiled (tens of seconds, once per process; ``load_stage``
        does it then). Returns the session's cache and next position."""
        cache = self.new_cache()
        token = torch.zeros(1, 1, self.hidden_size, dtype=self.dtype, device=self.device)
        steps = MIN_POSITION + 2
        for position in range(steps):
            self.forward(token, cache, position)
        return cache, steps

    def measure_throughput(self, steps: int = 8) -> float:
        """Decode tokens/s through this span (one token per step, warmed up), announced so
        coordinators can estimate each route's compute time."""
        cache, first = self.warm_up()
        token = torch.zeros(1, 1, self.hidden_size, dtype=self.dtype, device=self.device)
        started = time.perf_counter()
        for position in range(first, first + steps):
            self.forward(token, cache, position)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # time the kernels, not their asynchronous launch
        return steps / (time.perf_counter() - started)


@dataclass
class StageBlocks(SpanBlocks):
    """Transformer blocks [layer_start, layer_end) of one model, ready to run on hidden states."""

    model: nn.Module
    config: PretrainedConfig
    layer_start: int
    layer_end: int
    dtype: torch.dtype
    device: torch.device
    model_hash: bytes = b""  # of the weights as loaded (``weights_digest``), named in commitments
    quantization: str = "none"  # of its linear layers (``hydra.runtime.quantize``)
    compile: bool = False  # one-token steps through a compiled forward (``hydra.runtime.compiled``)
    backend = "pytorch"  # the library running the blocks (``hydra.runtime.backends``)

    def __post_init__(self) -> None:
        self._decode = compiled(self._run) if self.compile else self._run

    def new_cache(self, compacting: bool = False) -> Cache:
        """Per-session state: KV cache for attention blocks, recurrent state for linear ones;
        ``compacting``: attention blocks that Attention Matching can compact."""
        cache = DynamicCache(config=self.config)
        return compacting_cache(cache) if compacting else cache

    @torch.inference_mode()
    def compact(
        self, cache: Cache, target: int, selection: Selection = "attention", refit: bool = True,
        fractions: Sequence[Sequence[float]] = (),
    ) -> None:
        """Compact every attention block of ``cache`` to at most ``target`` entries per KV head
        (``fractions``: per block of the span, the share of ``target`` each head keeps)."""
        kv_heads = int(self.config.num_key_value_heads)
        for index, layer in enumerate(cache.layers):
            if isinstance(layer, CompactingLayer):
                budgets = head_budgets(target, fractions[index] if fractions else (), kv_heads)
                layer.compact(budgets, head_dim(self.config) ** -0.5, selection, refit)

    @torch.inference_mode()
    def forward(self, hidden: torch.Tensor, cache: Cache, position: int) -> torch.Tensor:
        """Run ``hidden`` [1, T, H] for positions ``position .. position+T-1``. The position is
        explicit because a slice of only linear-attention blocks has no KV cache to count."""
        hidden = hidden.to(self.device, self.dtype)
        positions = torch.arange(position, position + hidden.shape[1], device=self.device)
        if hidden.shape[1] == 1 and position >= MIN_POSITION and not is_compacting(cache):
            # a fresh copy: a token sliced from a longer tensor keeps strides that would recompile
            return self._decode(hidden.clone(memory_format=torch.contiguous_format), cache, positions[None])
        return self._run(hidden, cache, positions[None])

    @torch.inference_mode()
    def forward_batch(
        self, hiddens: list[torch.Tensor], caches: list[Cache], positions: list[int]
    ) -> list[torch.Tensor]:
        """One-token steps [1, 1, H] of several sessions (each at a ``position`` of at least
        ``MIN_POSITION``) as one forward pass (``hydra.runtime.session_batch``)."""
        if len(hiddens) == 1:
            return [self.forward(hiddens[0], caches[0], positions[0])]
        batch = torch.cat(hiddens).to(self.device, self.dtype)
        sessions = SessionsCache(caches)
        output = self.model(
            inputs_embeds=batch,
            attention_mask=batched_step_masks(self.config),
            position_ids=torch.tensor(positions, device=self.device)[:, None],
            cache=sessions,
            use_cache=True,
        ).last_hidden_state
        sessions.write_back()
        return list(output.split(1))

    @property
    def recurrent(self) -> bool:
        """Whether the span has linear-attention blocks, whose state cannot be cut back."""
        return "linear_attention" in (getattr(self.config, "layer_types", None) or ())

    def undo_point(self, cache: Cache, step: torch.Tensor) -> Undo | None:
        """What undoing the step ``step`` about to run needs beyond cutting KV caches back: a
        copy of the recurrent blocks' states, and the step (None for attention blocks only)."""
        if not self.recurrent:
            return None
        return Undo.of(cache, step)

    @torch.inference_mode()
    def rewind(self, cache: Cache, start: int, end: int, to: int, undo: Undo | None) -> None:
        """Take ``cache`` back to position ``to`` inside the last step [start, end): KV caches
        are cut; recurrent states go back to ``undo`` (taken before that step) and the kept
        part of the step runs again."""
        if undo is None:
            _cut_attention(cache, end - to)
            return
        _cut_attention(cache, end - start)  # back to ``start``; the rerun refills them
        undo.restore(cache)
        if to > start:
            self.forward(undo.step[:, : to - start], cache, start)

    def _run(self, hidden: torch.Tensor, cache: Cache, positions: torch.Tensor) -> torch.Tensor:
        return self.model(
            inputs_embeds=hidden,
            attention_mask=self._recurrent_only_masks(),
            position_ids=positions,
            cache=cache,
            use_cache=True,
        ).last_hidden_state

    def _recurrent_only_masks(self) -> dict[str, None] | None:
        """A hybrid slice with no full-attention block has no KV cache to size a causal mask
        from; its linear blocks need no mask for one unpadded sequence, so pass none."""
        kinds = set(getattr(self.config, "layer_types", None) or ())
        if not kinds or "full_attention" in kinds:
            return None
        return dict.fromkeys(kinds | {"full_attention"})


def load_stage(
    checkpoint_dir: Path,
    start: int,
    end: int,
    dtype: torch.dtype,
    device: torch.device,
    quantization: str = "none",
    compile: bool = False,
) -> StageBlocks:
    sliced = span_config(checkpoint_dir, start, end)
    base = _meta_causal_lm(sliced).model
    base.embed_tokens = None  # stages receive hidden states, never token ids
    base.norm = nn.Identity()  # the final norm belongs to the client head
    rotary = type(base.rotary_emb)(config=sliced)  # computed buffers: build off the meta device
    base.rotary_emb = None
    _materialize(base, Checkpoint(checkpoint_dir).layer_tensors(start, end, dtype), device)
    base.rotary_emb = rotary.to(device)
    base.config._attn_implementation = SESSIONS_ATTENTION  # SDPA, and batched steps
    check_quantization(quantization, device)
    shipped = gguf_of(checkpoint_dir) if quantization == "int4" else None
    linears = int4_linears_from_gguf(shipped, start, end, sliced) if shipped is not None else None
    if linears is not None:  # the GGUF's own 4-bit codes: its float32 copies are never read
        for name, layer in linears.items():
            base.set_submodule(name, layer.to(device))
        own_copies(base)
    elif quantization != "none":
        own_copies(quantize_linears(base, quantization))
        release_freed_memory()  # the float32 weights quantizing read and dropped
    base.eval()
    blocks = StageBlocks(base, sliced, start, end, dtype, device, weights_digest(base), quantization, compile)
    if compile:
        blocks.warm_up()
    return blocks


def own_copies(module: nn.Module) -> nn.Module:
    """Give ``module``'s remaining full-precision tensors (norms, biases) storage of their own.
    Tensors read from a checkpoint are views of its memory-mapped file: one left pointing
    there keeps the whole mapping, and every float32 page quantizing touched, resident."""
    for tensors in (module._parameters, module._buffers):
        for name, tensor in tensors.items():
            if tensor is not None and tensor.is_floating_point():
                copy = tensor.detach().clone()
                is_parameter = isinstance(tensor, nn.Parameter)
                tensors[name] = nn.Parameter(copy, requires_grad=False) if is_parameter else copy
    for child in module.children():
        own_copies(child)
    return module


def weights_digest(module: nn.Module, size: int = 16) -> bytes:
    """blake2b over every parameter's name, dtype, shape and bytes: which weights, in which
    precision, a stage runs (about 1 GB/s; paid once, when the stage loads)."""
    return tensors_digest(module.state_dict(), size)


def tensors_digest(tensors: Mapping[str, torch.Tensor], size: int = 16) -> bytes:
    """``weights_digest`` of named tensors: equal weights in equal dtypes give equal digests,
    whichever backend runs them."""
    digest = hashlib.blake2b(digest_size=size)
    for name, tensor in sorted(tensors.items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())  # hashed in place, no copy
    return digest.digest()


@dataclass
class ClientHead:
    """Embeddings, final norm and LM head: the part of a model that sees token ids."""

    embed_tokens: nn.Module
    norm: nn.Module
    lm_head: nn.Module
    config: PretrainedConfig
    dtype: torch.dtype
    device: torch.device

    @torch.inference_mode()
    def embed(self, token_ids: list[int]) -> torch.Tensor:
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        return self.embed_tokens(ids)

    def next_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [vocab] (float32, on the CPU where sampling happens) for the position after
        the last of ``hidden`` [1, T, H]; earlier positions are never sampled from."""
        return self.next_logits_of([hidden])[0]

    @torch.inference_mode()
    def next_logits_of(self, hiddens: list[torch.Tensor]) -> torch.Tensor:
        """``next_logits`` of several sessions' outputs at once: [len(hiddens), vocab]."""
        normed = self.norm(torch.cat([h[:, -1] for h in hiddens]).to(self.device, self.dtype))
        logits = self.lm_head(normed).float()
        if isinstance(self.lm_head, Int8Linear):  # the likeliest tokens' logits, exactly
            for row, vector in zip(logits, normed, strict=True):
                likeliest = row.topk(min(REFINED_LOGITS, row.numel())).indices
                row[likeliest] = self.lm_head.exact_outputs(vector, likeliest)
        return logits.cpu()

    @torch.inference_mode()
    def all_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [T, vocab] (float32, CPU) after every position of ``hidden`` [1, T, H]."""
        return self.lm_head(self.norm(hidden.to(self.device, self.dtype)))[0].float().cpu()


def load_head(
    checkpoint_dir: Path, dtype: torch.dtype, device: torch.device, quantization: str = "none"
) -> ClientHead:
    """The head; quantized (any mode), the LM head is int8 and the embedding table reads its
    int8 rows (one shared copy when the two are tied)."""
    config = text_config(checkpoint_dir)
    lm = _meta_causal_lm(slice_config(config, 0, 0))
    ckpt = Checkpoint(checkpoint_dir)
    embed_key = f"{ckpt.prefix}embed_tokens.weight"
    head_key = "lm_head.weight" if ckpt.has("lm_head.weight") else embed_key  # tied embeddings
    loaded = ckpt.load({embed_key, head_key, f"{ckpt.prefix}norm.weight"}, dtype)
    tensors: dict[str, Any] = {
        "model.embed_tokens.weight": loaded[embed_key],
        "model.norm.weight": loaded[f"{ckpt.prefix}norm.weight"],
        "lm_head.weight": loaded[head_key],
    }
    lm.model.layers = nn.ModuleList()
    lm.model.rotary_emb = None
    _materialize(lm, tensors, device)
    lm.eval()
    check_quantization(quantization, device)
    if quantization == "none":
        return ClientHead(lm.model.embed_tokens, lm.model.norm, lm.lm_head, config, dtype, device)
    # the LM head stays at 8 bits in every mode: at 4 bits its logits move by ~9% (SmolLM2),
    # enough to change greedy tokens
    table = Int8Linear(lm.model.embed_tokens.weight, None)
    head = table if head_key == embed_key else Int8Linear(lm.lm_head.weight, None)
    norm = own_copies(lm.model.norm)
    del lm, loaded, tensors
    release_freed_memory()
    return ClientHead(Int8Embedding(table, dtype), norm, head, config, dtype, device)
