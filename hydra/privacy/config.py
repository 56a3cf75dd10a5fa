"""How a coordinator protects its prompts (see the README's Security section)."""

from dataclasses import dataclass

from hydra.errors import ConfigError


@dataclass(frozen=True)
class PrivacyConfig:
    protect: bool = True  # onion routing and sealed activations on every hop
    local_layers: int = 0  # run the first blocks here, so no peer sees embeddings
    dp_noise_sigma: float = 0.0  # Gaussian noise on the activations leaving this node
    # the output comes back through every stage (2N messages per token, not N+1), so the last
    # stage, like every stage but the first, never learns who the coordinator is
    relayed_return: bool = False

    def __post_init__(self) -> None:
        if self.local_layers < 0 or self.dp_noise_sigma < 0:
            raise ConfigError("--local-layers and --dp-noise-sigma must not be negative")
