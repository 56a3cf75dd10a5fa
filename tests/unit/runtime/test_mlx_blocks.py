"""MLX blocks (``hydra.runtime.mlx_blocks``) against the PyTorch blocks of the same span, in
float32 on a tiny random Llama (and one with Llama 3's rotary scaling): the same outputs
through a prefill and decode steps, the same weights digest; a rewound session continues as
if the dropped tokens never ran; batched one-token steps compute what each session computes
alone; prefix-cache blocks round-trip; a stage loaded on one thread runs on another (MLX
streams are per thread). Compaction and non-Llama models are refused with typed errors."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytest.importorskip("mlx_lm", reason="mlx and mlx-lm are not installed (pip install 'mlx[cpu]' mlx-lm)")

from hydra.errors import ConfigError, InvalidRequest
from hydra.runtime.backends import MLX, PYTORCH, load_span
from hydra.runtime.mlx_blocks import MlxBlocks, load_mlx_stage
from hydra.runtime.shard import UnsupportedModel, load_stage
from hydra.stage.prefixes import PrefixStore
from protocols.inference import PREFIX_BLOCK
from tests.tiny_models import save_tiny_model, tiny_llama_config, tiny_qwen35_config

CPU = torch.device("cpu")
# float32, hidden states of magnitude ~5: measured max |MLX - PyTorch| 1.2e-6 over these
# steps (matrix products and rotary angles rounded in other orders)
ATOL = 5e-6
RTOL = 1e-5  # the same backend, the same tokens in other chunk or batch shapes
STEPS = [9, 1, 1, 3, 1, 1]  # a prefill, decode steps, a 3-token (draft-sized) step in between
LENGTHS = [2, 3, 7, 12]  # prompt lengths of the sessions in a batch
# Llama 3's rotary scaling, its original context shorter than the steps below reach
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("mlx") / "tiny-llama")


@pytest.fixture(scope="module")
def tiny_llama3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_llama_config()
    config.rope_parameters = LLAMA3_ROPE
    return save_tiny_model(config, tmp_path_factory.mktemp("mlx") / "tiny-llama3")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def hidden(tokens: int, blocks: MlxBlocks) -> torch.Tensor:
    return torch.randn(1, tokens, blocks.hidden_size)


@pytest.mark.parametrize(
    ("model", "span"), [("tiny_llama", (0, 6)), ("tiny_llama", (2, 5)), ("tiny_llama3", (0, 6))]
)
def test_mlx_blocks_compute_what_pytorch_blocks_compute(
    request: pytest.FixtureRequest, model: str, span: tuple[int, int]
) -> None:
    path = request.getfixturevalue(model)
    mlx = load_mlx_stage(path, *span, torch.float32)
    reference = load_stage(path, *span, torch.float32, CPU)
    assert (mlx.layer_start, mlx.layer_end, mlx.hidden_size) == (*span, reference.hidden_size)
    assert (mlx.model_hash, mlx.precision) == (reference.model_hash, reference.precision)
    torch.manual_seed(0)
    ours, theirs, position = mlx.new_cache(), reference.new_cache(), 0
    for tokens in STEPS:
        step = hidden(tokens, mlx)
        got, want = mlx.forward(step, ours, position), reference.forward(step, theirs, position)
        assert got.dtype == want.dtype and got.shape == want.shape == step.shape
        assert float((got - want).abs().max()) < ATOL, f"step at {position}"
        position += tokens


@pytest.mark.parametrize("kept", [0, 1, 3, 5])
def test_a_rewound_session_continues_as_if_the_dropped_tokens_never_ran(tiny_llama: Path, kept: int) -> None:
    blocks = load_mlx_stage(tiny_llama, 0, 6, torch.float32)
    torch.manual_seed(0)
    prompt, step, after = hidden(7, blocks), hidden(5, blocks), hidden(1, blocks)
    drafted, plain = blocks.new_cache(), blocks.new_cache()
    blocks.forward(prompt, drafted, 0)
    blocks.forward(prompt, plain, 0)
    undo = blocks.undo_point(drafted, step)
    assert undo is None and not blocks.recurrent
    blocks.forward(step, drafted, 7)  # five tokens, of which ``kept`` are accepted
    blocks.rewind(drafted, 7, 12, 7 + kept, undo)
    if kept:
        blocks.forward(step[:, :kept], plain, 7)
    got = blocks.forward(after, drafted, 7 + kept)
    assert relative(got, blocks.forward(after, plain, 7 + kept)) < RTOL


def test_batched_steps_match_each_session_alone(tiny_llama: Path) -> None:
    blocks = load_mlx_stage(tiny_llama, 0, 6, torch.float32)
    torch.manual_seed(0)
    prompts = [hidden(length, blocks) for length in LENGTHS]
    batched, alone = ([blocks.new_cache() for _ in LENGTHS] for _ in range(2))
    for prompt, mine, theirs in zip(prompts, batched, alone, strict=True):
        blocks.forward(prompt, mine, 0)
        blocks.forward(prompt, theirs, 0)
    for step in range(3):
        tokens = [hidden(1, blocks) for _ in LENGTHS]
        positions = [length + step for length in LENGTHS]
        together = blocks.forward_batch(tokens, batched, positions)
        for i, (token, cache, position) in enumerate(zip(tokens, alone, positions, strict=True)):
            assert relative(together[i], blocks.forward(token, cache, position)) < RTOL, f"session {i}"
    assert [c.offset for c in batched] == [length + 3 for length in LENGTHS]


def test_a_step_must_start_where_its_session_ends(tiny_llama: Path) -> None:
    """Rotary positions come from the cache's offset: a step elsewhere would be mispositioned."""
    blocks = load_mlx_stage(tiny_llama, 0, 2, torch.float32)
    cache = blocks.new_cache()
    blocks.forward(hidden(4, blocks), cache, 0)
    with pytest.raises(ValueError, match="at 5"):
        blocks.forward(hidden(1, blocks), cache, 5)


def test_prefix_blocks_kept_from_one_session_start_another(tiny_llama: Path) -> None:
    blocks = load_mlx_stage(tiny_llama, 0, 6, torch.float32)
    torch.manual_seed(0)
    prompt, after = hidden(2 * PREFIX_BLOCK + 5, blocks), hidden(1, blocks)
    first, store, chain = blocks.new_cache(), PrefixStore(), (b"a", b"b")
    blocks.forward(prompt, first, 0)
    assert store.keep(chain, first, prompt.shape[1], room=1 << 30) == 2
    reused = blocks.new_cache()
    store.restore(chain, reused)
    assert reused.offset == 2 * PREFIX_BLOCK
    blocks.forward(prompt[:, 2 * PREFIX_BLOCK :], reused, 2 * PREFIX_BLOCK)
    position = prompt.shape[1]
    assert relative(blocks.forward(after, reused, position), blocks.forward(after, first, position)) < RTOL


def test_a_stage_loaded_on_one_thread_serves_on_another(tiny_llama3: Path) -> None:
    """Llama 3's scaled rotary computes its frequencies lazily when built: left unevaluated,
    another thread could not use them."""
    blocks = load_mlx_stage(tiny_llama3, 0, 6, torch.float32)
    cache = blocks.new_cache()
    blocks.forward(hidden(3, blocks), cache, 0)  # a session begun here goes on there
    with ThreadPoolExecutor(1) as other:
        step = other.submit(blocks.forward, hidden(1, blocks), cache, 3).result()
        assert other.submit(blocks.measure_throughput, 2).result() > 0
    assert step.shape == (1, 1, blocks.hidden_size)
    blocks.forward(hidden(1, blocks), cache, 4)


def test_compaction_is_refused(tiny_llama: Path) -> None:
    blocks = load_mlx_stage(tiny_llama, 0, 2, torch.float32)
    with pytest.raises(InvalidRequest, match="cannot compact"):
        blocks.new_cache(compacting=True)
    with pytest.raises(InvalidRequest, match="cannot compact"):
        blocks.compact(blocks.new_cache(), 16)


def test_other_families_are_refused(tmp_path: Path) -> None:
    path = save_tiny_model(tiny_qwen35_config(), tmp_path / "tiny-qwen35")
    with pytest.raises(UnsupportedModel, match="qwen3_5_text"):
        load_mlx_stage(path, 0, 4, torch.float32)


def test_the_backend_switch_loads_mlx_blocks_and_refuses_what_mlx_cannot_run(tiny_llama: Path) -> None:
    blocks = load_span(MLX, tiny_llama, 0, 3, torch.float32, CPU)
    assert isinstance(blocks, MlxBlocks) and blocks.backend == MLX
    assert load_span(PYTORCH, tiny_llama, 0, 3, torch.float32, CPU).backend == PYTORCH
    for refused in ({"quantization": "int8"}, {"compile": True}):
        with pytest.raises(ConfigError, match="MLX backend"):
            load_span(MLX, tiny_llama, 0, 3, torch.float32, CPU, **refused)
