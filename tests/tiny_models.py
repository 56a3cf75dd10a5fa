"""Tiny random-weight checkpoints built from a config at test time (no hub, no download).

They cover architectures with no packaged weights: a Llama and a Qwen3.5 hybrid whose
blocks alternate linear (Gated DeltaNet) and full attention. Each gets a byte-level
tokenizer built in code (256 byte tokens, no merges, no EOS: random weights would hit an EOS
by chance and end a comparison early)."""

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)
from transformers.models.qwen3_5 import Qwen3_5TextConfig

VOCAB = 256  # the byte tokenizer's


def tiny_llama_config() -> PretrainedConfig:
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False,
    )


def tiny_qwen35_config() -> PretrainedConfig:
    return Qwen3_5TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        linear_key_head_dim=16, linear_value_head_dim=16,
        linear_num_key_heads=2, linear_num_value_heads=4, max_position_embeddings=512,
        tie_word_embeddings=True,
    )


def byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def save_tiny_model(config: PretrainedConfig, path: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of ``config`` with a byte tokenizer, saved at ``path``."""
    config.eos_token_id = config.bos_token_id = config.pad_token_id = None
    byte_tokenizer().save_pretrained(path)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # default init is near-zero; widen it so logits are far from ties
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.08)
    model.save_pretrained(path)
    return path


def tiny_catalog(path: Path, default: str, models: dict[str, int], num_layers: int = 6) -> Path:
    """A catalog ($HYDRA_CATALOG) of tiny Llamas: ``models`` maps ids to parameter counts
    (what promotion ranks them by); the first of them, or ``default``, is the default."""
    entries = [
        {"id": model_id, "family": "tiny", "hub_id": "", "architecture": "LlamaForCausalLM",
         "num_layers": num_layers, "parameters": parameters, "memory_per_shard_gb": 0.01,
         "recommended_quantization": "none", "peers_needed": 1, "quality_tier": "tiny"}
        for model_id, parameters in models.items()
    ]
    path.write_text(json.dumps({"schema_version": 1, "default": default, "models": entries}))
    return path
