"""Attention Matching for one attention head (Zweiger, Fu, Guo, Kim, 2026, arXiv 2602.16284).

A head's cache of T keys and values is replaced by m < T of them so that, for the queries the
head will see (reference queries), the compacted cache gives the same attention *output* and
the same attention *mass* (the softmax denominator, which decides how much this part of the
cache weighs against the tokens that come after it).

- Phase 1 chooses the keys: those with the highest attention (root mean square of their
  attention probability over the reference queries), or by orthogonal matching pursuit on the
  mass (greedily, the key that best explains what the chosen ones still miss).
- Phase 2 gives each kept key a bias beta, added to its logit, fitted by non-negative least
  squares so the kept keys carry the whole mass (exp(beta) is how many original keys a kept
  one stands for), then refits the values by least squares so the output matches.

Everything is in float64 on the caller's device: the systems are small (queries x kept keys)
and badly conditioned in float32.
"""

from dataclasses import dataclass
from typing import Literal

import torch

Selection = Literal["attention", "omp"]
MIN_WEIGHT = 1e-12  # a kept key whose weight fits to zero keeps a (very negative) finite bias


@dataclass(frozen=True)
class Compacted:
    """One head's compacted cache: ``keys`` [m, d], ``values`` [m, dv], ``bias`` [m] (added to
    the logits), and the original positions ``kept`` [m] (ascending)."""

    keys: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor
    kept: torch.Tensor


def attend(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``queries`` [n, d] over a cache: the outputs [n, dv] and the log of each
    query's attention mass [n]."""
    logits = (queries @ keys.T) * scale
    if bias is not None:
        logits = logits + bias
    return torch.softmax(logits, dim=-1) @ values, torch.logsumexp(logits, dim=-1)


def compact(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, budget: int, scale: float,
    selection: Selection = "attention", refit: bool = True, ridge: float = 1e-3,
    bias: torch.Tensor | None = None,
) -> Compacted:
    """Keep ``budget`` of the head's keys for the reference ``queries`` [n, d]; with ``refit``,
    fit their biases and values (phase 2), else keep them as they are (phase 1 alone). ``bias``
    [T]: the keys' biases from an earlier compaction, part of the attention to reproduce."""
    length = keys.shape[0]
    if not 0 < budget <= length:
        raise ValueError(f"budget must be 1..{length}, not {budget}")
    prior = torch.zeros(length, dtype=torch.float64, device=keys.device) if bias is None else bias.double()
    if budget == length:  # nothing to drop, nothing to fit
        return Compacted(keys, values, prior.float(), torch.arange(budget, device=keys.device))
    q, k, v = (t.to(torch.float64) for t in (queries, keys, values))
    probs = torch.softmax((q @ k.T) * scale + prior, dim=-1)  # [n, T]: each query's attention, summing to 1
    if selection == "attention":
        kept = torch.sort(torch.topk(probs.square().mean(0), budget).indices).values
    else:
        kept = _pursue(probs, budget)
    kept_bias, kept_values = prior[kept], v[kept]
    if refit:
        # how many of the original keys' exp(logit + bias) each kept key's exp(logit) stands for
        unbiased = probs[:, kept] * torch.exp(-kept_bias)
        weights = nnls(unbiased, torch.ones(probs.shape[0], dtype=torch.float64, device=k.device))
        kept_bias = torch.log(weights.clamp_min(MIN_WEIGHT))
        target = attend(q, k, v, scale, prior)[0]
        kept_values = _refit_values(q, k[kept], kept_bias, v[kept], target, scale, ridge)
    return Compacted(keys[kept], kept_values.to(values.dtype), kept_bias.float(), kept)


def _refit_values(
    q: torch.Tensor, kept_keys: torch.Tensor, bias: torch.Tensor, kept_values: torch.Tensor,
    target: torch.Tensor, scale: float, ridge: float,
) -> torch.Tensor:
    """Values that make the compacted attention's outputs ``target`` [n, dv], in the least
    squares sense, pulled towards the kept keys' own values by a ridge (for keys few queries
    attend to, whose values the outputs hardly determine)."""
    weights = torch.softmax((q @ kept_keys.T) * scale + bias, dim=-1)  # [n, m]
    gram = weights.T @ weights
    strength = ridge * max(float(gram.diagonal().mean()), 1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + strength * eye, weights.T @ target + strength * kept_values)


def _pursue(probs: torch.Tensor, budget: int) -> torch.Tensor:
    """Orthogonal matching pursuit on the mass: keys whose attention columns, weighted
    non-negatively, best make every query's mass whole (a vector of ones)."""
    target = torch.ones(probs.shape[0], dtype=probs.dtype, device=probs.device)
    norms = probs.norm(dim=0).clamp_min(1e-30)
    chosen: list[int] = []
    available = torch.ones(probs.shape[1], dtype=torch.bool, device=probs.device)
    residual = target
    for _ in range(budget):
        score = torch.where(available, (probs.T @ residual) / norms, -torch.inf)
        best = int(torch.argmax(score))
        chosen.append(best)
        available[best] = False
        columns = probs[:, chosen]
        residual = target - columns @ nnls(columns, target)
    return torch.sort(torch.tensor(chosen, device=probs.device)).values


def nnls(a: torch.Tensor, b: torch.Tensor, iterations: int = 500) -> torch.Tensor:
    """argmin ||a x - b|| over x >= 0, by accelerated projected gradient (FISTA)."""
    gram, rhs = a.T @ a, a.T @ b
    step = 1.0 / max(float(torch.linalg.matrix_norm(gram, ord=2)), 1e-30)
    x = torch.clamp(torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1), min=0)
    y, momentum = x, 1.0
    for _ in range(iterations):
        following = torch.clamp(y - step * (gram @ y - rhs), min=0)
        ahead = (1 + (1 + 4 * momentum * momentum) ** 0.5) / 2
        y = following + ((momentum - 1) / ahead) * (following - x)
        x, momentum = following, ahead
    return x
