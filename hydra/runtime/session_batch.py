"""One forward pass for the decode steps of several sessions, each keeping its own cache.

A decode step through a small span is mostly fixed cost: every weight is read, every
operation dispatched, whether one row goes through or eight. Stacking concurrent sessions'
one-token steps into a [B, 1, H] batch shares that cost (measured on 2 cores, 10 SmolLM2
blocks, int4: 8 sessions 16.9 ms batched against 8 x 7 ms one by one).

Only attention needs to know that the rows belong to different sessions of different
lengths, so only attention is split (Orca's "selective batching"): the projections, MLPs
and norms run on the batch; each row's keys and values go to its own session's
``DynamicCache`` and its query attends to that session's keys alone. No cache is padded,
copied or merged, so a session can join or leave a batch at any step. Linear-attention
(Gated DeltaNet) blocks get their sessions' recurrent states stacked, and written back.

This works through transformers' attention registry: stages run with ``SESSIONS_ATTENTION``,
which is plain SDPA (same masks, same kernels, same results) unless the cache is a
``SessionsCache``. Each row then computes what it computes alone, but for the
projections' matrix products, whose blocking depends on the row count: float32 rows differ
from unbatched ones by a few ulps (< 1e-5 relative, inside verification's float32
tolerance); the int8/int4 CPU kernels compute row by row and are bit-identical.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from hydra.compaction.cache import CompactingKeys, compacting_attention

SESSIONS_ATTENTION = "hydra_sessions"
# passed as the attention mask of a batched step: a 4D tensor makes transformers skip building
# a mask (attention is per session and needs none: a one-token query sees its whole cache)
_NO_MASK = torch.ones(1, 1, 1, 1, dtype=torch.bool)


@dataclass(frozen=True)
class SessionStates:
    """Stands for the key (or value) states of a batched attention block: one tensor per
    session, [1, kv_heads, length_i, head_dim], lengths differing."""

    per_session: list[torch.Tensor]


@dataclass
class SessionsCache:
    """The ``cache`` of a batched forward: row i of every tensor belongs to ``caches[i]``.
    Implements the parts of transformers' ``Cache`` that attention and Gated DeltaNet blocks
    call during a one-token step."""

    caches: list[Cache]
    _conv: dict[int, torch.Tensor] = field(default_factory=dict)  # stacked, updated in place

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[SessionStates, SessionStates]:
        keys, values = [], []
        for row, cache in enumerate(self.caches):
            k, v = cache.update(key_states[row : row + 1], value_states[row : row + 1], layer_idx)
            keys.append(k)
            values.append(v)
        return SessionStates(keys), SessionStates(values)

    def get_conv_state(self, layer_idx: int, state_idx: int = 0) -> torch.Tensor:
        stacked = torch.cat([c.get_conv_state(layer_idx, state_idx) for c in self.caches])
        self._conv[layer_idx] = stacked  # the block's fused update writes into it
        return stacked

    def get_recurrent_state(self, layer_idx: int, state_idx: int = 0) -> torch.Tensor:
        return torch.cat([c.get_recurrent_state(layer_idx, state_idx) for c in self.caches])

    def update_recurrent_state(
        self, states: torch.Tensor, layer_idx: int, state_idx: int = 0
    ) -> torch.Tensor:
        for row, cache in enumerate(self.caches):
            cache.update_recurrent_state(states[row : row + 1], layer_idx, state_idx)
        return states

    def is_recording_past(self, layer_idx: int) -> bool:
        return False

    def write_back(self) -> None:
        """Give each session the convolution window its row ended the step with."""
        for layer_idx, stacked in self._conv.items():
            for row, cache in enumerate(self.caches):
                cache.get_conv_state(layer_idx).copy_(stacked[row : row + 1])
        self._conv.clear()


def sessions_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor | SessionStates | CompactingKeys,
    value: torch.Tensor | SessionStates,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA; for a ``SessionsCache`` step, each row's query over its own session's states; a
    compacting session's block adds its keys' biases (``hydra.compaction.cache``)."""
    if not isinstance(key, SessionStates):
        return _attend(module, query, key, value, attention_mask, **kwargs)
    assert isinstance(value, SessionStates)
    rows = [
        _attend(module, query[row : row + 1], k, v, None, **kwargs)[0]
        for row, (k, v) in enumerate(zip(key.per_session, value.per_session, strict=True))
    ]
    return torch.cat(rows), None


def _attend(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor | CompactingKeys, value: torch.Tensor,
    attention_mask: torch.Tensor | None, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if isinstance(key, CompactingKeys):
        return compacting_attention(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(SESSIONS_ATTENTION, sessions_attention)
AttentionMaskInterface.register(SESSIONS_ATTENTION, sdpa_mask)


def batched_step_masks(config: Any) -> torch.Tensor | dict[str, torch.Tensor | None]:
    """The ``attention_mask`` argument of a batched step: no mask to build for any block kind
    (hybrid models take one per kind; their linear blocks need none for unpadded rows)."""
    kinds = set(getattr(config, "layer_types", None) or ())
    if "linear_attention" in kinds:
        return {"full_attention": _NO_MASK, "linear_attention": None}
    return _NO_MASK
