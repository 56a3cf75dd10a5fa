"""hydra.compaction.matching: Attention Matching on one head beats plain key selection and
truncation on queries it was not fitted on, and keeps everything when nothing is dropped."""

import pytest
import torch

from hydra.compaction.matching import attend, compact, nnls

T, D, N = 512, 64, 128


def head(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A head whose attention is uneven (some keys stand out), reference queries to fit on and
    held-out queries from the same distribution to judge with."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(T, D, generator=g)
    keys[torch.randperm(T, generator=g)[: T // 8]] *= 2.5
    values = torch.randn(T, D, generator=g)
    direction = torch.randn(D, generator=g)
    queries = torch.randn(2 * N, D, generator=g) + direction
    return keys, values, queries[:N], queries[N:]


def errors(held, keys, values, scale, compacted_keys, compacted_values, bias=None):
    """Mean relative output error and mean absolute log-mass error on the held-out queries."""
    full, full_mass = attend(held, keys, values, scale)
    out, mass = attend(held, compacted_keys, compacted_values, scale, bias)
    relative = (out - full).norm(dim=-1) / full.norm(dim=-1)
    return float(relative.mean()), float((mass - full_mass).abs().mean())


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_attention_matching_beats_selection_alone_and_truncation(ratio):
    keys, values, ref, held = head()
    scale, budget = D**-0.5, T // ratio
    matched = compact(ref, keys, values, budget, scale)
    selected = compact(ref, keys, values, budget, scale, refit=False)
    am = errors(held, keys, values, scale, matched.keys, matched.values, matched.bias)
    plain = errors(held, keys, values, scale, selected.keys, selected.values)
    recent = errors(held, keys, values, scale, keys[-budget:], values[-budget:])
    assert am[0] < plain[0] and am[0] < recent[0], (am, plain, recent)  # outputs
    assert am[1] < plain[1] and am[1] < recent[1], (am, plain, recent)  # mass
    assert matched.keys.shape == (budget, D) and matched.values.shape == (budget, D)
    assert torch.equal(matched.keys, keys[matched.kept]) and bool((matched.kept.diff() > 0).all())


def test_orthogonal_matching_pursuit_also_beats_truncation():
    keys, values, ref, held = head(1)
    scale, budget = D**-0.5, T // 4
    pursued = compact(ref, keys, values, budget, scale, selection="omp")
    am = errors(held, keys, values, scale, pursued.keys, pursued.values, pursued.bias)
    recent = errors(held, keys, values, scale, keys[-budget:], values[-budget:])
    assert am[0] < recent[0] and am[1] < recent[1]
    assert len(set(pursued.kept.tolist())) == budget


def test_keeping_every_key_changes_nothing():
    keys, values, ref, held = head(2)
    scale = D**-0.5
    kept = compact(ref, keys, values, T, scale)
    out, mass = attend(held, kept.keys, kept.values, scale, kept.bias)
    full, full_mass = attend(held, keys, values, scale)
    torch.testing.assert_close(out, full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mass, full_mass, atol=1e-4, rtol=1e-4)


def test_nnls_finds_a_non_negative_solution():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(40, 8, generator=g, dtype=torch.float64)
    truth = torch.tensor([0.0, 1.5, 0.0, 2.0, 0.3, 0.0, 0.0, 4.0], dtype=torch.float64)
    found = nnls(a, a @ truth)
    assert bool((found >= 0).all())
    torch.testing.assert_close(found, truth, atol=1e-3, rtol=1e-3)
    clipped = nnls(a, -(a @ truth))  # nothing non-negative fits: zero is the best
    assert float(clipped.abs().max()) < 1e-9
    with pytest.raises(ValueError):
        compact(torch.zeros(1, 4), torch.zeros(3, 4), torch.zeros(3, 4), 4, 1.0)
