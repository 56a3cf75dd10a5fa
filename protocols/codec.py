"""msgpack codec for protocol messages.

A message is a frozen dataclass with a class-level ``TYPE`` tag. On the wire it is a msgpack
map ``{"t": TYPE, <field>: <value>, ...}``. Decoding is strict: unknown tags, missing or extra
fields and wrongly typed values all raise ``ProtocolError`` with a precise code, so handlers
never see a half-valid message. A message may define ``check()`` for bounds beyond types.
"""

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

import msgpack

from protocols.errors import ErrorCode, ProtocolError

TYPE_KEY = "t"


@dataclasses.dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str]

    def check(self) -> None:
        """Bounds a type cannot express; raise ``ProtocolError(BAD_FIELD, ...)``."""

    def to_wire(self) -> dict[str, Any]:
        fields = {f.name: _to_wire(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {TYPE_KEY: self.TYPE, **fields}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], path: str = "") -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(data) - names - {TYPE_KEY}
        if extra:
            raise _bad(path, f"unexpected field(s) {sorted(map(str, extra))}")
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = _coerce(data[f.name], hints[f.name], f"{path}{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _bad(path, f"missing field {f.name!r}")
        message = cls(**values)
        message.check()
        return message


@dataclasses.dataclass(frozen=True)
class Error(Message):
    """The typed error reply every protocol sends for a message it rejects."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    peer: str = ""  # the peer at fault when it is not the sender (a failed next hop)


class Schema:
    """The set of message types one side of a protocol accepts."""

    def __init__(self, messages: Iterable[type[Message]]) -> None:
        self.by_type = {m.TYPE: m for m in messages}

    def decode(self, payload: bytes) -> Message:
        data = unpack(payload)
        if not isinstance(data, dict):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "message is not a map")
        tag = data.get(TYPE_KEY)
        if not isinstance(tag, str):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"message has no string {TYPE_KEY!r}")
        cls = self.by_type.get(tag)
        if cls is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {tag[:64]!r}")
        return cls.from_wire(data)


def encode(message: Message) -> bytes:
    return msgpack.packb(message.to_wire(), use_bin_type=True)


def unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises a zoo of types (ValueError, ExtraData, ...)
        raise ProtocolError(ErrorCode.BAD_MSGPACK, f"undecodable msgpack: {exc}") from None


def _bad(path: str, what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, f"{path.rstrip('.') or 'message'}: {what}")


def _hints(cls: type) -> dict[str, Any]:
    cached = cls.__dict__.get("_hydra_hints")
    if cached is None:
        cached = typing.get_type_hints(cls)
        cls._hydra_hints = cached
    return cached


def _to_wire(value: Any) -> Any:
    if isinstance(value, Message):
        return {k: v for k, v in value.to_wire().items() if k != TYPE_KEY}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against ``hint``; return it converted (lists to tuples, maps to messages)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, hint, path)
    if origin is tuple:  # tuple[X, ...]: a homogeneous list on the wire
        if not isinstance(value, (list, tuple)):
            raise _bad(path, f"expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, Message):
        if not isinstance(value, dict):
            raise _bad(path, f"expected a map, got {type(value).__name__}")
        return hint.from_wire(value, f"{path}.")
    return _coerce_scalar(value, hint, path)


def _coerce_union(value: Any, hint: Any, path: str) -> Any:
    options = typing.get_args(hint)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, path)
        except ProtocolError:
            continue
    raise _bad(path, f"expected {hint}, got {type(value).__name__}")


def _coerce_scalar(value: Any, hint: Any, path: str) -> Any:
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(path, f"expected a number, got {type(value).__name__}")
        return float(value)
    if hint is int and isinstance(value, bool):
        raise _bad(path, "expected an integer, got bool")
    if hint in (int, str, bytes, bool):
        if not isinstance(value, hint):
            raise _bad(path, f"expected {hint.__name__}, got {type(value).__name__}")
        return value
    raise TypeError(f"unsupported schema type {hint!r} at {path}")  # a bug in a schema
