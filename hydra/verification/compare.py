"""Is a stage's output what an honest stage would have computed? Tolerant of honest numeric
differences, strict on cheating.

Measured on SmolLM2-135M (see ``notes/verification.md`` and ``scripts/bench_verify.py``):
fp32 against fp32 is bit-identical across thread counts and differs by < 5e-7 relative across
batch shapes; fp32 against bf16 differs by up to 7.3e-4 in cosine distance and 0.038 in
relative L2 per token over 29 blocks. Cheating is larger: a skipped block moves tokens by
0.25+ relative L2; noise of 1e-3 of each token's RMS moves them by 1e-3 (fp32 verifiers catch
it; a bf16 verifier cannot, by design). The few massive-activation channels are left out
(they dwarf the rest, so a metric over them sees almost nothing else). For the last span the
logits through the client head are compared too: KL per token, and top-1 agreement once
enough tokens are compared for a rate to mean something.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from hydra.models.catalog import MixedPrecisionBounds

MASSIVE_RATIO = 8.0  # a channel whose RMS exceeds the median channel's by this much
MAX_MASSIVE = 16
MIN_TOP1_TOKENS = 16  # fewer compared tokens: top-1 agreement is too coarse to judge


@dataclass(frozen=True)
class Tolerance:
    name: str
    max_cos_distance: float  # 1 - cos per token
    max_rel_l2: float  # ||claimed - reference|| / ||reference|| per token
    max_kl: float  # KL(reference || claimed) of next-token distributions, per token
    min_top1: float  # share of tokens whose top-1 token agrees


# Thresholds: several times the largest honest difference measured, far below cheating. LOOSE
# is for models with no calibrated ``mixed_precision`` bounds (it is SmolLM2's, rounded up).
STRICT = Tolerance("fp32", max_cos_distance=1e-6, max_rel_l2=1e-4, max_kl=1e-4, min_top1=0.99)
LOOSE = Tolerance("mixed", max_cos_distance=3e-3, max_rel_l2=0.1, max_kl=0.05, min_top1=0.75)


def tolerance_for(*dtypes: str, mixed: MixedPrecisionBounds | None = None) -> Tolerance:
    """Strict when everything involved (each side's compute, and a wire that rounds one side
    only) is float32; else the model's calibrated mixed-precision bounds, or the default ones."""
    if all(d == "float32" for d in dtypes):
        return STRICT
    if mixed is None:
        return LOOSE
    return Tolerance(
        "mixed (calibrated)", mixed.max_cos_distance, mixed.max_rel_l2, mixed.max_kl, LOOSE.min_top1
    )


@dataclass
class Verdict:
    passed: bool
    tolerance: str
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def fail(self, reason: str) -> None:
        self.passed = False
        self.reason = self.reason or reason


def massive_channels(reference: torch.Tensor) -> list[int]:
    """Channels of ``reference`` [1, T, H] whose RMS dwarfs the median channel's."""
    rms = reference.double().pow(2).mean(dim=(0, 1)).sqrt()
    median = rms.median().clamp_min(1e-30)
    ranked = torch.argsort(rms, descending=True)[:MAX_MASSIVE]
    return sorted(int(c) for c in ranked if rms[c] > MASSIVE_RATIO * median)


def compare(
    claimed: torch.Tensor,
    reference: torch.Tensor,
    tolerance: Tolerance,
    massive: Sequence[int] | None = None,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Verdict:
    """Compare ``claimed`` against the verifier's ``reference`` (both [1, T, H]). ``massive``:
    channels to leave out (detected from the reference when None). ``head``: hidden -> logits
    [T, vocab], given when the span is the model's last."""
    verdict = Verdict(True, tolerance.name)
    if claimed.shape != reference.shape:
        verdict.fail(f"shape {list(claimed.shape)}, expected {list(reference.shape)}")
        return verdict
    a, b = claimed.double()[0], reference.double()[0]
    if not torch.isfinite(a).all():
        verdict.fail("non-finite values")
        return verdict
    keep = torch.ones(a.shape[-1], dtype=torch.bool)
    keep[list(massive_channels(reference) if massive is None else massive)] = False
    a, b = a[:, keep], b[:, keep]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    rel = (a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-30)
    verdict.metrics.update(cos_distance=float((1 - cos).max()), rel_l2=float(rel.max()))
    if verdict.metrics["cos_distance"] > tolerance.max_cos_distance:
        verdict.fail(
            f"cosine distance {verdict.metrics['cos_distance']:.3g} > {tolerance.max_cos_distance:g}"
        )
    if verdict.metrics["rel_l2"] > tolerance.max_rel_l2:
        verdict.fail(f"relative L2 {verdict.metrics['rel_l2']:.3g} > {tolerance.max_rel_l2:g}")
    if head is not None:
        _compare_logits(verdict, head(claimed), head(reference), tolerance)
    return verdict


def _compare_logits(
    verdict: Verdict, claimed: torch.Tensor, reference: torch.Tensor, tolerance: Tolerance
) -> None:
    p_log = torch.log_softmax(reference.double(), dim=-1)
    q_log = torch.log_softmax(claimed.double(), dim=-1)
    kl = (p_log.exp() * (p_log - q_log)).sum(dim=-1)
    top1 = (reference.argmax(dim=-1) == claimed.argmax(dim=-1)).double().mean()
    verdict.metrics.update(kl=float(kl.max()), top1=float(top1))
    if verdict.metrics["kl"] > tolerance.max_kl:
        verdict.fail(f"KL {verdict.metrics['kl']:.3g} > {tolerance.max_kl:g}")
    if reference.shape[0] >= MIN_TOP1_TOKENS and verdict.metrics["top1"] < tolerance.min_top1:
        verdict.fail(f"top-1 agreement {verdict.metrics['top1']:.2f} < {tolerance.min_top1:g}")


def calibrate(honest: Iterable[Verdict], margin: float = 3.0) -> MixedPrecisionBounds:
    """Bounds ``margin`` times the largest differences seen between honest replicas."""
    worst = {"cos_distance": 0.0, "rel_l2": 0.0, "kl": 0.0}
    for verdict in honest:
        for key in worst:
            worst[key] = max(worst[key], verdict.metrics.get(key, 0.0))
    return MixedPrecisionBounds(
        max_cos_distance=float(f"{margin * worst['cos_distance']:.2g}"),
        max_rel_l2=float(f"{margin * worst['rel_l2']:.2g}"),
        max_kl=float(f"{margin * worst['kl']:.2g}") or LOOSE.max_kl,
    )
