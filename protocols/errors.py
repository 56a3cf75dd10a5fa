"""Typed protocol errors: every rejected message maps to one code, sent back as an ``Error``."""

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"  # length prefix missing or stream ended mid-frame
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_MSGPACK = "bad_msgpack"
    BAD_MESSAGE = "bad_message"  # valid msgpack, but not a map with a known "t"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"  # missing, extra or wrongly typed field, or a bound exceeded
    UNEXPECTED = "unexpected"  # a valid message where the protocol does not allow it
    INVALID_RECORD = "invalid_record"  # signature, expiry or schema of a peer record
    OVERLOADED = "overloaded"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message or frame that breaks the wire contract; carries the code to reply with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
