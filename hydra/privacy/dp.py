"""Gaussian noise on the activations that leave the coordinator, with an audit tag.

Noise is drawn from a generator seeded by HMAC-SHA256(audit key, position), so it is
reproducible by whoever holds the session's audit key, and every noised step gets a tag,
HMAC-SHA256(audit key, sigma, position, SHA-256 of the noise): the coordinator (or an auditor
it hands the key to) can later verify exactly which noise was applied to which step. The
noise trades output quality for privacy against the first remote stage; scripts/privacy_attack.py
measures both."""

import hashlib
import hmac
import struct

import torch


def _noise(key: bytes, sigma: float, position: int, shape: tuple[int, ...]) -> torch.Tensor:
    seed = hmac.new(key, b"seed" + position.to_bytes(8, "big"), hashlib.sha256).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(seed[:8], "big") >> 1)
    return torch.randn(shape, generator=generator, dtype=torch.float32) * sigma


def _tag(key: bytes, sigma: float, position: int, noise: torch.Tensor) -> bytes:
    digest = hashlib.sha256(noise.contiguous().numpy().tobytes()).digest()
    return hmac.new(key, struct.pack(">dQ", sigma, position) + digest, hashlib.sha256).digest()


def add_noise(hidden: torch.Tensor, sigma: float, key: bytes, position: int) -> tuple[torch.Tensor, bytes]:
    """``hidden`` plus N(0, sigma^2) noise for positions ``position...``, and the audit tag."""
    noise = _noise(key, sigma, position, tuple(hidden.shape))  # drawn on the CPU: reproducible
    noised = hidden.float() + noise.to(hidden.device)
    return noised.to(hidden.dtype), _tag(key, sigma, position, noise)


def verify_noise(tag: bytes, key: bytes, sigma: float, position: int, shape: tuple[int, ...]) -> bool:
    """Whether ``tag`` certifies noise of ``sigma`` at ``position`` under ``key``."""
    expected = _tag(key, sigma, position, _noise(key, sigma, position, shape))
    return hmac.compare_digest(tag, expected)
