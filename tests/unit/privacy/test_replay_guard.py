"""Stages refuse a sealed session header twice, and headers outside their lifetime."""

import time

import pytest

from hydra.privacy.onion import CLOCK_SKEW_S, HEADER_LIFETIME_S, ReplayGuard
from protocols import inference
from protocols.errors import ErrorCode, ProtocolError


def opened(ephemeral: bytes = b"e" * 32, expires_in: float = HEADER_LIFETIME_S):
    request = inference.OpenSession(b"s" * 16, "m", b"sealed", ephemeral)
    header = inference.HopHeader(layer_start=0, layer_end=1, max_length=8, dtype="float32",
                                 step_timeout=10.0, expires_at=time.time() + expires_in)
    return request, header


def refused(guard: ReplayGuard, request, header) -> str:
    with pytest.raises(ProtocolError) as info:
        guard.admit(request, header)
    assert info.value.code == ErrorCode.BAD_ONION
    return info.value.message


def test_a_sealed_header_opens_one_session():
    guard = ReplayGuard()
    guard.admit(*opened())
    assert "already used" in refused(guard, *opened())
    guard.admit(*opened(b"f" * 32))  # another header is fine


def test_headers_outside_their_lifetime_are_refused():
    guard = ReplayGuard()
    assert "expired" in refused(guard, *opened(expires_in=-CLOCK_SKEW_S - 1))
    assert "too far ahead" in refused(guard, *opened(expires_in=HEADER_LIFETIME_S + CLOCK_SKEW_S + 5))
    guard.admit(*opened(expires_in=-CLOCK_SKEW_S / 2))  # a coordinator's clock a little behind


def test_expired_headers_are_forgotten_and_unsealed_ones_never_remembered():
    guard = ReplayGuard()
    guard.admit(*opened(b""))
    guard.admit(*opened(b""))  # an unsealed open carries no keys to reuse
    guard.admit(*opened())
    guard.accepted[b"old" * 8] = time.time() - 1  # past its memory
    guard.admit(*opened(b"g" * 32))
    assert set(guard.accepted) == {b"e" * 32, b"g" * 32}
