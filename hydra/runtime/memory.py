"""What a session costs in memory on a span of blocks: KV bytes per token in attention blocks,
and the fixed recurrent state of linear-attention (Gated DeltaNet) blocks; and giving freed
memory back to the system."""

import ctypes

import torch
from transformers import PretrainedConfig


def cache_bytes_per_token(config: PretrainedConfig, dtype: torch.dtype) -> int:
    """KV bytes one token costs in a span of ``config``'s blocks (recurrent blocks hold a
    fixed-size state instead, see ``session_state_bytes``)."""
    itemsize = torch.tensor([], dtype=dtype).element_size()
    return 2 * attention_blocks(config) * config.num_key_value_heads * head_dim(config) * itemsize


def attention_blocks(config: PretrainedConfig) -> int:
    """Blocks of the span that keep keys and values (not linear-attention ones)."""
    kinds = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return sum(1 for kind in kinds if kind != "linear_attention")


def head_dim(config: PretrainedConfig) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def session_state_bytes(config: PretrainedConfig) -> int:
    """Fixed bytes a session holds in a span's recurrent (linear-attention) blocks, whatever
    its length: a convolution window and a per-head state matrix, counted as float32."""
    linear = sum(1 for kind in getattr(config, "layer_types", None) or () if kind == "linear_attention")
    if not linear:
        return 0
    key_dim = config.linear_num_key_heads * config.linear_key_head_dim
    value_dim = config.linear_num_value_heads * config.linear_value_head_dim
    conv = (2 * key_dim + value_dim) * config.linear_conv_kernel_dim
    state = config.linear_num_value_heads * config.linear_key_head_dim * config.linear_value_head_dim
    return linear * (conv + state) * 4


def release_freed_memory() -> None:
    """Hand memory freed by the C allocator back to the system (glibc keeps freed heap pages
    otherwise, and a node's resident set would still count the float32 weights it quantized)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
