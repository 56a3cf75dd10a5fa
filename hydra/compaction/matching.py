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

With as many kept keys as reference queries or more, the fits are underdetermined and
reproduce the reference queries and little else; so phase 2 fits on three quarters of them
and lets the rest choose among candidate fits (per-key weights pulled towards a shared one,
the shared one alone, the earlier biases; values refitted at several ridge strengths, or
kept), the plain selection among them. Everything is in float64 on the caller's device: the
systems are small (queries x kept keys) and badly conditioned in float32.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch

Selection = Literal["attention", "omp"]
MIN_WEIGHT = 1e-12  # a kept key whose weight fits to zero keeps a (very negative) finite bias
RIDGES = (1e-3, 1e-1, 1e1)  # value refits tried, pulled towards the kept values this strongly
HELD_OUT = 4  # every 4th reference query judges the fits instead of shaping them
NNLS_PULLS = (0.1,)  # per-key weight fits tried, pulled towards a shared weight this strongly


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
    selection: Selection = "attention", refit: bool = True, bias: torch.Tensor | None = None,
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
        kept_bias, kept_values = _validated_fit(q, k, v, probs, kept, prior, scale)
    return Compacted(keys[kept], kept_values.to(values.dtype), kept_bias.float(), kept)


def _validated_fit(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, probs: torch.Tensor, kept: torch.Tensor,
    prior: torch.Tensor, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept keys' biases and values (phase 2), fitted on most of the reference queries and
    chosen on the rest: fitted or earlier biases, values refitted at each ``RIDGES`` strength or
    kept, and the selection alone among them. With as many kept keys as queries or more, an
    unregularised fit reproduces the reference queries and little else; held-out queries pick
    the fit that generalises, so phase 2 never does worse on them than phase 1."""
    held = torch.arange(q.shape[0], device=q.device) % HELD_OUT == HELD_OUT - 1
    if held.all() or not held.any():  # too few queries to hold any out
        held = torch.ones_like(held)
    fit = ~held if (~held).any() else held
    target, target_mass = attend(q, k, v, scale, prior)
    # how many of the original keys' exp(logit + bias) each kept key's exp(logit) stands for:
    # fitted key by key (non-negative least squares), pulled towards one weight shared by all
    # (which cannot overfit), or that shared weight alone
    unbiased = probs[fit][:, kept] * torch.exp(-prior[kept])
    whole = torch.ones(int(fit.sum()), dtype=torch.float64, device=q.device)
    covered = unbiased.sum(1)
    shared = float(covered @ whole / (covered @ covered).clamp_min(1e-30))
    biases = [torch.full_like(prior[kept], math.log(max(shared, MIN_WEIGHT))), prior[kept]]
    for pull in NNLS_PULLS:
        weights = nnls(unbiased, whole, pull=pull, towards=shared)
        biases.append(torch.log(weights.clamp_min(MIN_WEIGHT)))
    candidates = [(prior[kept], v[kept])]  # the selection alone
    for bias in biases:
        candidates.append((bias, v[kept]))
        for values in _ridge_fits(q[fit], k[kept], bias, v[kept], target[fit], scale):
            candidates.append((bias, values))

    def error(candidate: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Relative output error plus log-mass error (each a share), on the held-out queries."""
        bias, values = candidate
        out, mass = attend(q[held], k[kept], values, scale, bias)
        misfit = (out - target[held]).norm(dim=-1) / target[held].norm(dim=-1).clamp_min(1e-30)
        return float(misfit.mean() + (mass - target_mass[held]).abs().mean())

    return min(candidates, key=error)


def _ridge_fits(
    q: torch.Tensor, kept_keys: torch.Tensor, bias: torch.Tensor, kept_values: torch.Tensor,
    target: torch.Tensor, scale: float,
) -> list[torch.Tensor]:
    """Values that make the compacted attention's outputs ``target`` [n, dv] in the least
    squares sense, pulled towards the kept keys' own values by a ridge of each ``RIDGES``
    strength (relative to the Gram matrix's diagonal); one eigendecomposition serves all."""
    weights = torch.softmax((q @ kept_keys.T) * scale + bias, dim=-1)  # [n, m]
    gram = weights.T @ weights
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    scale_of = max(float(gram.diagonal().mean()), 1e-12)
    projected = weights.T @ target
    fits = []
    for ridge in RIDGES:
        strength = ridge * scale_of
        rhs = eigenvectors.T @ (projected + strength * kept_values)
        fits.append(eigenvectors @ (rhs / (eigenvalues.clamp_min(0) + strength)[:, None]))
    return fits


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


def nnls(
    a: torch.Tensor, b: torch.Tensor, iterations: int = 500, pull: float = 0.0, towards: float = 0.0
) -> torch.Tensor:
    """argmin ||a x - b||² + pull·s·||x - towards||² over x >= 0 (s: the mean of a's squared
    column norms, so ``pull`` is relative), by accelerated projected gradient (FISTA)."""
    gram, rhs = a.T @ a, a.T @ b
    if pull:
        strength = pull * max(float(gram.diagonal().mean()), 1e-30)
        gram = gram + strength * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        rhs = rhs + strength * towards
    step = 1.0 / max(_largest_eigenvalue(gram), 1e-30)
    x = torch.clamp(torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1), min=0)
    y, momentum = x, 1.0
    for _ in range(iterations):
        following = torch.clamp(y - step * (gram @ y - rhs), min=0)
        ahead = (1 + (1 + 4 * momentum * momentum) ** 0.5) / 2
        y = following + ((momentum - 1) / ahead) * (following - x)
        x, momentum = following, ahead
    return x


def _largest_eigenvalue(gram: torch.Tensor, iterations: int = 30) -> float:
    """An upper bound on the largest eigenvalue of ``gram`` (entrywise non-negative, as the
    attention's Gram matrices are), tight after a few power iterations: the Collatz-Wielandt
    bound max_i (G x)_i / x_i for a positive x. An SVD would cost more than the descent."""
    vector = torch.ones(gram.shape[0], dtype=gram.dtype, device=gram.device)
    for _ in range(iterations):
        vector = gram @ vector
        vector = vector / vector.max().clamp_min(1e-300)
    positive = vector > 0
    if not positive.any():
        return 0.0
    return float(((gram @ vector)[positive] / vector[positive]).max())
