"""How much a coordinator checks the stages it uses, and how it judges them."""

from dataclasses import dataclass

from hydra.errors import ConfigError


@dataclass(frozen=True)
class VerificationConfig:
    verify_rate: float = 0.1  # share of each stage's steps audited after the fact (tier 1)
    probes_only: bool = False  # audit synthetic probe generations on the same routes, never the user's own
    redundancy: int = 1  # routes each step runs on, the majority output winning (tier 2)
    min_reputation: float = 0.5  # peers scoring below this are left out of new routes
    half_life_s: float = 86400.0  # how fast reputation forgets
    seed: int | None = None  # audit choices from a seeded generator (tests, benchmarks)

    def __post_init__(self) -> None:
        if not 0.0 <= self.verify_rate <= 1.0:
            raise ConfigError(f"--verify-rate must be in [0, 1], not {self.verify_rate}")
        if not 1 <= self.redundancy <= 8:
            raise ConfigError(f"--redundancy must be 1..8, not {self.redundancy}")
        if not 0.0 <= self.min_reputation <= 1.0:
            raise ConfigError(f"--min-reputation must be in [0, 1], not {self.min_reputation}")
