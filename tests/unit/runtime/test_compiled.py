"""Compiled decode steps compute what eager ones do (float32: to rounding), for attention and
for Qwen3.5's recurrent blocks, across sessions of different lengths without recompiling; and
the runtime defaults resolve per device."""

from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from hydra.errors import ConfigError
from hydra.runtime.compiled import MIN_POSITION, compiler_found, should_compile
from hydra.runtime.quantize import resolve_quantization
from hydra.runtime.shard import load_stage
from tests.tiny_models import save_tiny_model, tiny_llama_config, tiny_qwen35_config

CPU = torch.device("cpu")
CUDA = torch.device("cuda")

needs_compiler = pytest.mark.skipif(not compiler_found(), reason="torch.compile needs g++ on the CPU")


def decode(blocks, prompt: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The outputs of one session: ``prompt`` [1, T, H] at once, then ``steps`` one by one."""
    cache = blocks.new_cache()
    outputs = [blocks.forward(prompt, cache, 0)]
    for i in range(steps.shape[1]):
        outputs.append(blocks.forward(steps[:, i : i + 1], cache, prompt.shape[1] + i))
    return torch.cat(outputs, dim=1)


@needs_compiler
@pytest.mark.parametrize(("config", "layers"), [(tiny_llama_config, 2), (tiny_qwen35_config, 4)])
def test_compiled_decode_steps_match_eager_ones(tmp_path: Path, config, layers: int) -> None:
    """(Qwen3.5's first four blocks: three linear-attention ones and a full-attention one.)"""
    path = save_tiny_model(config(), tmp_path / "tiny")
    eager = load_stage(path, 0, layers, torch.float32, CPU)
    graphs = counters["stats"]["unique_graphs"]
    fast = load_stage(path, 0, layers, torch.float32, CPU, compile=True)
    assert counters["stats"]["unique_graphs"] > graphs, "loading did not compile the decode step"
    compiled_before = counters["stats"]["unique_graphs"]
    torch.manual_seed(0)
    for prompt_length in (MIN_POSITION, 5, 11):  # sessions of several lengths: one graph serves all
        prompt, steps = torch.randn(1, prompt_length, 64), torch.randn(1, 9, 64)
        want, got = decode(eager, prompt, steps), decode(fast, prompt, steps)
        assert float((got - want).norm() / want.norm()) < 1e-5
    assert counters["stats"]["unique_graphs"] == compiled_before, "a session length recompiled"


def test_auto_compiles_on_a_cpu_with_a_compiler_only() -> None:
    assert should_compile("auto", CPU) == compiler_found()
    assert not should_compile("auto", CUDA) and not should_compile("off", CPU)
    assert should_compile("on", CUDA)
    with pytest.raises(ConfigError, match="--compile"):
        should_compile("fast", CPU)


def test_auto_quantization_follows_the_catalog_on_a_cpu_only() -> None:
    assert resolve_quantization("auto", CPU, "int4") == "int4"
    assert resolve_quantization("auto", CUDA, "int4") == "none"
    assert resolve_quantization("auto", CPU, "gptq") == "none"  # a recommendation hydra lacks
    assert resolve_quantization("int8", CUDA, "int4") == "int8"  # explicit: checked when loading
