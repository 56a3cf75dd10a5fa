"""Length-prefixed frames: a 4-byte big-endian length, then that many payload bytes.

Every protocol states its own maximum; a prefix above it is rejected before any payload is
read, so a hostile peer cannot make us buffer more than the limit."""

from typing import Final

from protocols.errors import ErrorCode, ProtocolError

HEADER_SIZE: Final = 4
DEFAULT_MAX_FRAME: Final = 1 << 20  # 1 MiB: control messages and record sets


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(payload)} bytes exceeds {max_frame}"
        )
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


def decode_header(header: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> int:
    """Payload length announced by ``header``; raises if malformed or above ``max_frame``."""
    if len(header) != HEADER_SIZE:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame header has {len(header)} bytes")
    length = int.from_bytes(header, "big")
    if length > max_frame:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds {max_frame}"
        )
    return length
