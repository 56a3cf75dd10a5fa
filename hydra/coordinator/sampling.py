"""Choosing the next token from logits at the coordinator (peers never see token ids).

Seeded sampling draws from a ``torch.Generator`` owned by the request, so the same seed gives
the same tokens whatever the pipeline split, as long as the logits agree."""

import secrets

import torch

from hydra.coordinator.params import SamplingParams


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
