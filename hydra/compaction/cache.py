"""A session's KV cache that Attention Matching can compact, block by block and head by head.

Each attention block of a compacting session keeps its keys and values in a
``CompactingLayer``: transformers' ``DynamicLayer`` plus a bias per cached key (zero until a
compaction fits one; added to the key's attention logit) and a sample of the queries the block
computed, the reference queries a compaction fits to. They are the session's own, collected
on-policy: each stage's input is what the stages before it computed from their (compacted)
caches, so every stage fits to what it actually sees, in pipeline order.

Compacted entries stand for more positions than they number, so nothing here counts
positions by entries: rotary positions are the step's own (``StageBlocks.forward`` passes them
explicitly, continuing from the original length), and the causal mask is built here from the
block's entries (transformers would size it from the first block's, and per-block budgets make
lengths differ). Linear-attention blocks (Qwen3.5) are not touched: their recurrent state is
already of fixed size.

The query sample is a function of the positions seen, not of how steps were chunked: every
``stride``-th position of the session (the stride doubling as the session grows, so at most
``SPREAD_QUERIES`` of them) and the latest ``RECENT_QUERIES``. A replay of the same steps with
the same compaction orders therefore rebuilds the same compacted cache (failover).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PretrainedConfig
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from hydra.compaction.matching import Selection, compact
from hydra.runtime.memory import attention_blocks, head_dim

SPREAD_QUERIES = 192  # positions sampled evenly over the whole session, per block
RECENT_QUERIES = 64  # ... and the latest ones
REWIND_MARGIN = 33  # recent queries kept beyond those, so a rewound draft (<= 32 tokens) loses none
PADDING_BIAS = -1e4  # a head keeping fewer entries than its block's longest pads with dead keys


def _stride(end: int) -> int:
    """The sampling stride once ``end`` positions have been seen: the smallest power of two
    that leaves at most ``SPREAD_QUERIES`` multiples of it before the recent ones."""
    stride, older = 1, max(0, end - RECENT_QUERIES)
    while -(-older // stride) > SPREAD_QUERIES:
        stride *= 2
    return stride


class QuerySample:
    """A block's reference queries, [query heads, head dim] per sampled position."""

    def __init__(self) -> None:
        self.end = 0  # positions seen
        self.kept: dict[int, torch.Tensor] = {}

    def add(self, queries: torch.Tensor) -> None:
        """``queries`` [heads, T, head dim] of the next T positions."""
        first, self.end = self.end, self.end + queries.shape[1]
        stride, held = _stride(self.end), self.end - RECENT_QUERIES - REWIND_MARGIN
        for position in range(first, self.end):
            if position >= held or position % stride == 0:
                self.kept[position] = queries[:, position - first].clone()
        # older positions leave the recent ones, and the stride may have doubled
        self.kept = {p: q for p, q in self.kept.items() if p >= held or p % stride == 0}

    def rewind(self, end: int) -> None:
        self.kept = {p: q for p, q in self.kept.items() if p < end}
        self.end = end

    def grouped(self, kv_heads: int) -> torch.Tensor:
        """The sample as [kv heads, positions x query heads per KV head, head dim]: the queries
        each KV head answers (grouped-query attention shares a KV head among several)."""
        stride, recent = _stride(self.end), self.end - RECENT_QUERIES
        chosen = [q for p, q in sorted(self.kept.items()) if p >= recent or p % stride == 0]
        stacked = torch.stack(chosen, dim=1)  # [heads, n, d]
        heads, n, dim = stacked.shape
        return stacked.reshape(kv_heads, heads // kv_heads * n, dim)


@dataclass(frozen=True)
class CompactingKeys:
    """What a compacting block's cache update returns as its keys: the keys, and the layer,
    for ``compacting_attention`` (which records the queries and adds the biases)."""

    keys: torch.Tensor
    layer: "CompactingLayer"


class CompactingLayer(DynamicLayer):
    """An attention block's keys and values, their biases, and its reference queries."""

    def __init__(self) -> None:
        super().__init__()
        self.bias: torch.Tensor | None = None  # [1, kv heads, entries], float32; None: all zero
        self.live: list[int] = []  # per KV head: entries that are not padding (after a compaction)
        self.queries = QuerySample()

    def update(  # type: ignore[override]
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[CompactingKeys, torch.Tensor]:
        keys, values = super().update(key_states, value_states)
        added = key_states.shape[-2]
        if self.bias is not None:
            self.bias = torch.nn.functional.pad(self.bias, (0, added))
        self.live = [n + added for n in self.live]
        return CompactingKeys(keys, self), values

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last entries (a rewound draft's): they were appended after any compaction."""
        super().crop(tokens_to_remove)
        removed = abs(tokens_to_remove)
        if removed and self.bias is not None:
            self.bias = self.bias[..., :-removed]
        self.live = [n - removed for n in self.live]
        self.queries.rewind(self.queries.end - removed)

    def reset(self) -> None:
        super().reset()
        self.bias, self.live, self.queries = None, [], QuerySample()

    def mask(self, query: torch.Tensor) -> torch.Tensor | None:
        """The additive mask of ``query`` [1, heads, T, d] (the step's T new positions are the
        last T entries): biases, and causality among the new positions; None when neither."""
        steps, entries = query.shape[2], self.keys.shape[-2]
        if self.bias is None and steps == 1:
            return None
        kv_heads = self.keys.shape[1]
        mask = torch.zeros(1, kv_heads, steps, entries, device=query.device)
        if self.bias is not None:
            mask += self.bias[:, :, None, :]
        future = torch.ones(steps, steps, dtype=torch.bool, device=query.device).triu(1)
        mask[..., entries - steps :].masked_fill_(future, -torch.inf)
        floor = torch.finfo(query.dtype).min
        return mask.clamp_min(floor).repeat_interleave(query.shape[1] // kv_heads, dim=1).to(query.dtype)

    @torch.inference_mode()
    def compact(self, budgets: Sequence[int], scale: float, selection: Selection, refit: bool) -> None:
        """Keep at most ``budgets[h]`` entries of KV head h, fitted to the sampled queries."""
        if not self.is_initialized or self.keys.numel() == 0:
            return
        kv_heads, entries = self.keys.shape[1], self.keys.shape[-2]
        live = self.live or [entries] * kv_heads
        if all(budget >= n for budget, n in zip(budgets, live, strict=True)):
            return
        queries = self.queries.grouped(kv_heads).to(self.keys.device)
        heads = []
        for head in range(kv_heads):
            real = self._live_entries(head)
            prior = None if self.bias is None else self.bias[0, head, real]
            heads.append(compact(
                queries[head], self.keys[0, head, real], self.values[0, head, real],
                max(1, min(budgets[head], len(real))), scale, selection, refit, bias=prior,
            ))
        width = max(h.keys.shape[0] for h in heads)
        self.live = [h.keys.shape[0] for h in heads]
        self.keys = torch.stack([_pad(h.keys, width, 0.0) for h in heads])[None]
        self.values = torch.stack([_pad(h.values, width, 0.0) for h in heads])[None]
        self.bias = torch.stack([_pad(h.bias, width, PADDING_BIAS) for h in heads])[None]

    def _live_entries(self, head: int) -> torch.Tensor:
        """Indices of head ``head``'s real entries: padding sits between its compacted entries
        and those appended since."""
        if self.bias is None:
            return torch.arange(self.keys.shape[-2], device=self.keys.device)
        return torch.nonzero(self.bias[0, head] > PADDING_BIAS / 2).squeeze(1)


def _pad(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
    missing = length - tensor.shape[0]
    if not missing:
        return tensor
    filler = torch.full((missing, *tensor.shape[1:]), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, filler])


def compacting_cache(cache: DynamicCache) -> DynamicCache:
    """``cache`` (new, empty) with its full-attention blocks made compactable."""
    cache.layers = [CompactingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def is_compacting(cache: Cache) -> bool:
    return any(isinstance(layer, CompactingLayer) for layer in cache.layers)


def cache_entries(cache: Cache) -> int:
    """The most entries any attention block of ``cache`` holds (what its memory is sized by)."""
    lengths = [layer.get_seq_length() for layer in cache.layers if isinstance(layer, DynamicLayer)]
    return max(lengths, default=0)


def query_sample_bytes(config: PretrainedConfig, dtype: torch.dtype) -> int:
    """The most a compacting session's query samples take, all attention blocks together."""
    positions = SPREAD_QUERIES + 1 + RECENT_QUERIES + REWIND_MARGIN
    itemsize = torch.tensor([], dtype=dtype).element_size()
    return attention_blocks(config) * positions * config.num_attention_heads * head_dim(config) * itemsize


def head_budgets(target: int, fractions: Sequence[float], kv_heads: int) -> list[int]:
    """Entries each KV head of a block keeps: ``target`` scaled by its fraction (phase 3:
    one per head, or one for the block; none: all of ``target``)."""
    shares = list(fractions) or [1.0]
    if len(shares) == 1:
        shares = shares * kv_heads
    return [max(1, round(target * share)) for share in shares]


def compacting_attention(
    module: torch.nn.Module, query: torch.Tensor, key: CompactingKeys, value: torch.Tensor,
    attention_mask: torch.Tensor | None, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA over a compacting block: records the queries, adds the biases; transformers' mask
    is replaced by the block's own (see the module's docstring)."""
    layer = key.layer
    layer.queries.add(query[0])
    return sdpa_attention_forward(module, query, key.keys, value, layer.mask(query), **kwargs)
