"""A peer's slice of a model run by MLX (mlx-lm's own Llama classes), for Apple Silicon nodes.

The same contract as ``hydra.runtime.shard.StageBlocks``: torch hidden states [1, T, H] in
and out (copied through numpy on the CPU: MLX's memory is unified on Apple Silicon), one
cache per session, explicit positions. The blocks are mlx-lm's ``LlamaModel`` built from the
transformers config sliced to blocks [start, end), with no embedding table and an identity
final norm, so its masks and rotary embeddings are mlx-lm's own; only the needed tensors are
read from disk. Rotary positions come from each block's ``KVCache`` offset, so a step must
start where its session's cache ends (``forward`` checks): without compaction they agree.

MLX evaluates lazily, on a stream that belongs to the thread that built the graph: an array
left unevaluated by one thread cannot be evaluated by another. So every call evaluates what
it leaves behind (outputs, caches, weights at load), and the stage may be called from any
thread, one at a time (``hydra.runtime.compute``'s single compute thread).

Llama blocks only; compaction is refused (it needs transformers' cache layers).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch
from mlx import nn
from mlx_lm.models import llama
from mlx_lm.models.cache import KVCache
from transformers import PretrainedConfig

from hydra.errors import InvalidRequest
from hydra.runtime.checkpoint import Checkpoint
from hydra.runtime.shard import SpanBlocks, UnsupportedModel, span_config, tensors_digest

MLX_FAMILIES = frozenset({"llama"})
NO_COMPACTION = "this stage runs MLX, which cannot compact KV caches; open the session without compaction"


def to_mx(tensor: torch.Tensor) -> mx.array:
    flat = tensor.detach().to("cpu").contiguous()
    if flat.dtype == torch.bfloat16:  # numpy has no bfloat16: carry the bits
        return mx.array(flat.view(torch.int16).numpy()).view(mx.bfloat16)
    return mx.array(flat.numpy())


def to_torch(array: mx.array) -> torch.Tensor:
    if array.dtype == mx.bfloat16:
        return torch.from_numpy(np.array(array.view(mx.int16))).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))


@dataclass(frozen=True)
class _TorchSlices:
    """An MLX array read as torch tensors one slice at a time: the prefix store copies a block
    of keys or values out of a session (``[:, :, span]``), never the whole cache."""

    array: mx.array

    def __getitem__(self, index: Any) -> torch.Tensor:
        return to_torch(self.array[index])


@dataclass(frozen=True)
class _LayerView:
    keys: _TorchSlices
    values: _TorchSlices

    @classmethod
    def of(cls, cache: KVCache) -> "_LayerView":
        held = slice(0, cache.offset)  # the buffers grow in steps of 256 positions
        return cls(_TorchSlices(cache.keys[..., held, :]), _TorchSlices(cache.values[..., held, :]))


@dataclass
class MlxCache:
    """A session's keys and values: one mlx-lm ``KVCache`` per block. ``layers`` and ``update``
    are the parts of transformers' ``Cache`` that ``hydra.stage.prefixes`` reads and fills."""

    blocks: list[KVCache]

    @property
    def offset(self) -> int:
        return int(self.blocks[0].offset)

    @property
    def layers(self) -> list[_LayerView]:
        return [_LayerView.of(block) for block in self.blocks]

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int) -> None:
        """Append ``keys`` and ``values`` [1, kv_heads, T, head_dim] to block ``layer``."""
        self.blocks[layer].update_and_fetch(to_mx(keys), to_mx(values))
        mx.eval(self.arrays())

    def arrays(self) -> list[tuple[mx.array, mx.array]]:
        return [(block.keys, block.values) for block in self.blocks]


@dataclass
class _SessionRows:
    """One block's caches in a batched one-token step: row i of the batch is ``caches[i]``'s
    session (as in ``hydra.runtime.session_batch``, only attention needs to know). Each row's
    keys and values go to its own cache, so a session may join or leave a batch at any step;
    attention reads them zero-padded to the longest session, the padding masked out."""

    caches: list[KVCache]
    offset: mx.array = field(init=False)  # each row's rotary position

    def __post_init__(self) -> None:
        self.offset = mx.array([c.offset for c in self.caches])

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        rows = [c.update_and_fetch(keys[i : i + 1], values[i : i + 1]) for i, c in enumerate(self.caches)]
        longest = max(k.shape[2] for k, _ in rows)

        def padded(arrays: tuple[mx.array, ...]) -> mx.array:
            widths = [[(0, 0), (0, 0), (0, longest - a.shape[2]), (0, 0)] for a in arrays]
            return mx.concatenate([mx.pad(a, width) for a, width in zip(arrays, widths, strict=True)])

        row_keys, row_values = zip(*rows, strict=True)
        return padded(row_keys), padded(row_values)

    def make_mask(self, tokens: int, **_: Any) -> mx.array:
        """[B, 1, 1, longest]: each row sees its own session's keys, this step's included."""
        lengths = self.offset + tokens
        return (mx.arange(int(lengths.max().item()))[None] < lengths[:, None])[:, None, None]


@dataclass
class MlxBlocks(SpanBlocks):
    """Transformer blocks [layer_start, layer_end) of one model run by MLX, on torch hidden
    states; the stage server and coordinator use it as they use ``StageBlocks``."""

    model: llama.LlamaModel
    config: PretrainedConfig
    layer_start: int
    layer_end: int
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")  # of the torch tensors in and out
    model_hash: bytes = b""  # ``tensors_digest`` of the weights as loaded: a PyTorch stage's own
    quantization: str = "none"
    compile: bool = False
    recurrent: bool = False  # attention blocks only: a rewind just cuts KV caches
    backend = "mlx"

    def new_cache(self, compacting: bool = False) -> MlxCache:
        if compacting:
            raise InvalidRequest(NO_COMPACTION)
        return MlxCache([KVCache() for _ in range(self.layer_end - self.layer_start)])

    def compact(self, cache: MlxCache, target: int, *how: Any) -> None:
        raise InvalidRequest(NO_COMPACTION)

    def forward(self, hidden: torch.Tensor, cache: MlxCache, position: int) -> torch.Tensor:
        """Run ``hidden`` [1, T, H] for positions ``position .. position+T-1``."""
        return self.forward_batch([hidden], [cache], [position])[0]

    def forward_batch(
        self, hiddens: list[torch.Tensor], caches: list[MlxCache], positions: list[int]
    ) -> list[torch.Tensor]:
        """One forward pass for several sessions' one-token steps (or one session's step of
        any length); each keeps its own cache (``_SessionRows``)."""
        for cache, position in zip(caches, positions, strict=True):
            if cache.offset != position:  # rotary positions follow the cache, not ``position``
                raise ValueError(f"a step at {position} on a session whose cache holds {cache.offset}")
        batch = mx.concatenate([to_mx(h.to(self.dtype)) for h in hiddens])
        if len(caches) == 1:
            blocks = caches[0].blocks
        else:
            blocks = [_SessionRows([c.blocks[i] for c in caches]) for i in range(len(caches[0].blocks))]
        output = self.model(None, cache=blocks, input_embeddings=batch)
        mx.eval(output, [cache.arrays() for cache in caches])  # nothing left for another thread
        return list(to_torch(output).split(1))

    def undo_point(self, cache: MlxCache, step: torch.Tensor) -> None:
        """Nothing to keep: attention blocks are undone by cutting their caches."""
        return None

    def rewind(self, cache: MlxCache, start: int, end: int, to: int, undo: None) -> None:
        """Take ``cache`` back to position ``to`` inside the last step [start, end)."""
        for block in cache.blocks:
            block.trim(end - to)


def load_mlx_stage(checkpoint_dir: Path, start: int, end: int, dtype: torch.dtype) -> MlxBlocks:
    config = span_config(checkpoint_dir, start, end)
    if config.model_type not in MLX_FAMILIES:
        raise UnsupportedModel(
            f"the MLX backend runs {', '.join(sorted(MLX_FAMILIES))} blocks, not {config.model_type!r}"
            " (serve it with the PyTorch backend)"
        )
    model = llama.LlamaModel(_model_args(config))
    model.embed_tokens = None  # stages receive hidden states, never token ids
    model.norm = nn.Identity()  # the final norm belongs to the client head
    tensors = Checkpoint(checkpoint_dir).layer_tensors(start, end, dtype)
    model.load_weights([(name, to_mx(tensor)) for name, tensor in tensors.items()], strict=True)
    # every array the modules hold, parameters or not (a scaled rotary's frequencies), made
    # real here, where they were built: another thread could not evaluate them
    mx.eval([array for module in model.modules() for array in module.values() if isinstance(array, mx.array)])
    return MlxBlocks(model, config, start, end, dtype, model_hash=tensors_digest(tensors))


def _model_args(config: PretrainedConfig) -> llama.ModelArgs:
    """mlx-lm's arguments for ``config``: transformers 5 keeps the rotary settings in
    ``rope_parameters``, where mlx-lm reads ``rope_theta`` and ``rope_scaling``."""
    rope: dict[str, Any] = dict(getattr(config, "rope_parameters", None) or {})
    args = llama.ModelArgs.from_dict(config.to_dict())
    args.rope_theta = float(rope.get("rope_theta", args.rope_theta))
    args.rope_scaling = rope if rope.get("rope_type", "default") != "default" else None
    return args
