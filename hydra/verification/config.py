"""How much a coordinator checks the stages it uses, and how it judges them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class VerificationConfig:
    verify_rate: float = 0.1  # share of each stage's steps audited after the fact (tier 1)
    probes_only: bool = False  # audit only synthetic probe prompts, never the user's own
    min_reputation: float = 0.5  # peers scoring below this are left out of new routes
    half_life_s: float = 86400.0  # how fast reputation forgets
    seed: int | None = None  # audit choices from a seeded generator (tests, benchmarks)
