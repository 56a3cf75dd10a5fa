"""hydra.compaction.cache on real (tiny) stages: a compacting cache computes what a plain one
does until it is compacted; compaction shrinks attention blocks to the budgets, keeps rotary
positions, leaves Qwen3.5's recurrent state alone, feeds its biases to attention (batched
steps too) and can be rewound; its reference queries do not depend on how steps were chunked."""

import copy

import pytest
import torch
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from hydra.compaction.cache import (
    PADDING_BIAS,
    CompactingLayer,
    QuerySample,
    cache_entries,
    head_budgets,
)
from hydra.runtime.shard import StageBlocks, load_stage
from tests.tiny_models import save_tiny_model, tiny_llama_config, tiny_qwen35_config

CPU = torch.device("cpu")
PROMPT = 200


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> StageBlocks:
    path = save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("llama"))
    return load_stage(path, 0, 6, torch.float32, CPU)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> StageBlocks:
    path = save_tiny_model(tiny_qwen35_config(), tmp_path_factory.mktemp("qwen"))
    return load_stage(path, 0, 8, torch.float32, CPU)


def prefilled(blocks: StageBlocks, compacting: bool, chunks: tuple[int, ...] = (PROMPT,)):
    torch.manual_seed(0)
    prompt = torch.randn(1, PROMPT, blocks.hidden_size)
    cache = blocks.new_cache(compacting)
    position = 0
    for size in chunks:
        blocks.forward(prompt[:, position : position + size], cache, position)
        position += size
    return cache


@pytest.mark.parametrize("model", ["llama", "qwen"])
def test_an_uncompacted_compacting_cache_computes_what_a_plain_one_does(request, model: str) -> None:
    blocks = request.getfixturevalue(model)
    plain, compacting = prefilled(blocks, False, (150, 50)), prefilled(blocks, True, (150, 50))
    torch.manual_seed(1)
    position = PROMPT
    for tokens in (3, 1, 1, 1):
        step = torch.randn(1, tokens, blocks.hidden_size)
        want = blocks.forward(step, plain, position)
        assert relative(blocks.forward(step, compacting, position), want) < 1e-5
        position += tokens


def test_compaction_shrinks_every_block_and_the_session_goes_on_from_its_positions(llama) -> None:
    full, compacted = prefilled(llama, True), prefilled(llama, True)
    llama.compact(compacted, PROMPT // 4)
    assert cache_entries(compacted) == PROMPT // 4 and cache_entries(full) == PROMPT
    torch.manual_seed(1)
    token = torch.randn(1, 1, llama.hidden_size)
    near = llama.forward(token, compacted, PROMPT)  # position 200 although 50 entries are cached
    exact = llama.forward(token, full, PROMPT)
    assert cache_entries(compacted) == PROMPT // 4 + 1
    assert relative(near, exact) < 0.5  # an approximation, not noise (bench_compaction measures it)
    shifted = llama.forward(token, prefilled_and_compacted(llama), PROMPT // 4)  # wrong positions
    assert relative(near, exact) < relative(shifted, exact)


def prefilled_and_compacted(blocks: StageBlocks):
    cache = prefilled(blocks, True)
    blocks.compact(cache, PROMPT // 4)
    return cache


def test_compacting_to_every_entry_changes_nothing(llama) -> None:
    full, same = prefilled(llama, True), prefilled(llama, True)
    llama.compact(same, PROMPT)
    token = torch.randn(1, 1, llama.hidden_size)
    assert torch.equal(llama.forward(token, same, PROMPT), llama.forward(token, full, PROMPT))


def test_qwen35_recurrent_state_is_untouched(qwen) -> None:
    cache = prefilled(qwen, True)
    states = [
        (layer.conv_states[0].clone(), layer.recurrent_states[0].clone())
        for layer in cache.layers if isinstance(layer, LinearAttentionCacheLayerMixin)
    ]
    qwen.compact(cache, 40)
    after = [
        (layer.conv_states[0], layer.recurrent_states[0])
        for layer in cache.layers if isinstance(layer, LinearAttentionCacheLayerMixin)
    ]
    assert len(states) == 6
    assert all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(states, after, strict=True))
    attention = [layer for layer in cache.layers if isinstance(layer, CompactingLayer)]
    assert [layer.keys.shape[-2] for layer in attention] == [40, 40]
    assert qwen.forward(torch.randn(1, 2, qwen.hidden_size), cache, PROMPT).isfinite().all()


def test_biases_reach_attention_in_batched_steps_too(llama) -> None:
    sessions = [prefilled_and_compacted(llama), prefilled(llama, True), prefilled_and_compacted(llama)]
    alone = copy.deepcopy(sessions)
    torch.manual_seed(2)
    tokens = [torch.randn(1, 1, llama.hidden_size) for _ in sessions]
    together = llama.forward_batch(tokens, sessions, [PROMPT] * 3)
    for i, (token, cache) in enumerate(zip(tokens, alone, strict=True)):
        assert relative(together[i], llama.forward(token, cache, PROMPT)) < 1e-5, f"session {i}"
    unbiased = prefilled_and_compacted(llama)
    for layer in unbiased.layers:
        layer.bias = torch.zeros_like(layer.bias)
    assert relative(llama.forward(tokens[0], unbiased, PROMPT), together[0]) > 1e-3


def test_per_head_budgets_pad_with_dead_keys(llama) -> None:
    cache = prefilled(llama, True)
    llama.compact(cache, 60, fractions=[(1.0, 0.5)] * 6)
    layer = cache.layers[0]
    assert layer.live == [60, 30] and layer.keys.shape[-2] == 60
    assert torch.all(layer.bias[0, 1, 30:] == PADDING_BIAS)
    token = torch.randn(1, 1, llama.hidden_size)
    assert llama.forward(token, cache, PROMPT).isfinite().all()
    assert layer.live == [61, 31]
    llama.compact(cache, 20)  # compacts again, the padding dropped
    assert layer.live == [20, 20] and layer.keys.shape[-2] == 20
    assert head_budgets(10, (0.25,), 3) == [2, 2, 2] and head_budgets(10, (), 2) == [10, 10]


def test_a_draft_after_compaction_can_be_rewound(llama) -> None:
    cache, twin = prefilled_and_compacted(llama), prefilled_and_compacted(llama)
    draft = torch.randn(1, 5, llama.hidden_size)
    llama.forward(draft, cache, PROMPT)
    llama.rewind(cache, PROMPT, PROMPT + 5, PROMPT + 2, None)
    llama.forward(draft[:, :2], twin, PROMPT)
    assert cache_entries(cache) == cache_entries(twin) == PROMPT // 4 + 2
    assert cache.layers[0].queries.end == twin.layers[0].queries.end == PROMPT + 2
    token = torch.randn(1, 1, llama.hidden_size)
    assert relative(llama.forward(token, cache, PROMPT + 2), llama.forward(token, twin, PROMPT + 2)) < 1e-5


def test_the_query_sample_does_not_depend_on_chunking() -> None:
    torch.manual_seed(3)
    queries = torch.randn(4, 1000, 8)
    whole, pieces = QuerySample(), QuerySample()
    whole.add(queries)
    for start in range(0, 1000, 37):
        pieces.add(queries[:, start : start + 37])
    assert torch.equal(whole.grouped(2), pieces.grouped(2))
    assert whole.grouped(2).shape[1] <= 2 * (192 + 64 + 1)  # bounded, whatever the length
