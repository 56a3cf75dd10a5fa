"""Choosing the next token from logits at the coordinator (peers never see token ids).

Seeded sampling draws from a ``torch.Generator`` owned by the request, so the same seed gives
the same tokens whatever the pipeline split, as long as the logits agree."""

import secrets
from dataclasses import dataclass

import torch


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
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


class Sampler:
    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator().manual_seed(
            params.seed if params.seed is not None else secrets.randbits(63)
        )

    def next_token(self, logits: torch.Tensor, context: list[int]) -> int:
        """Pick from ``logits`` [vocab] (float32) given the ids seen so far."""
        p = self.params
        logits = logits.clone()
        if p.repetition_penalty != 1.0 and context:
            seen = torch.tensor(sorted(set(context)), dtype=torch.long)
            scores = logits[seen]
            logits[seen] = torch.where(
                scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty
            )
        if p.temperature == 0:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if p.top_k and p.top_k < logits.numel():
            cutoff = torch.topk(logits, p.top_k).values[-1]
            logits[logits < cutoff] = -torch.inf
        if p.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=True)
            cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
            drop = cumulative - torch.softmax(ordered, dim=-1) >= p.top_p  # keep the first over
            logits[order[drop]] = -torch.inf
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
