"""What a request asks of sampling: plain data, checked on creation (no torch here, so the
CLI can read its defaults without loading torch)."""

from dataclasses import dataclass

from hydra.errors import ConfigError, InvalidRequest

DRAFT_TOKENS = 6  # speculative decoding: tokens drafted per step (``hydra.coordinator.speculation``)


def check_draft_tokens(tokens: int) -> int:
    if not 0 <= tokens <= 32:
        raise ConfigError(f"--draft-tokens must be 0..32, not {tokens}")
    return tokens


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no limit
    seed: int | None = None
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the context
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1")
        if self.temperature < 0:
            raise InvalidRequest("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise InvalidRequest("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise InvalidRequest("top_k must be >= 0")
        if self.repetition_penalty <= 0:
            raise InvalidRequest("repetition_penalty must be > 0")
        if any(not s for s in self.stop):
            raise InvalidRequest("stop strings must not be empty")
