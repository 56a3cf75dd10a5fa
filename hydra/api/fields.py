"""Strict reading of JSON request bodies: every field checked for type and range, every
refusal a 400 naming the parameter, so no client input reaches the coordinator unchecked."""

import math
from collections.abc import Mapping
from typing import Any, Literal, overload

from hydra.api.errors import bad_request
from hydra.compaction.plan import MAX_RATIO, MODES

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256
MAX_TEXT = 1 << 20  # characters in one prompt or message


class Fields:
    def __init__(self, body: Any, where: str = "") -> None:
        if not isinstance(body, Mapping):
            raise bad_request(f"{where or 'the request body'} must be a JSON object")
        self.body = body
        self.where = where

    def _name(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def _get(self, name: str, required: bool) -> Any:
        value = self.body.get(name)
        if value is None and required:
            raise bad_request(f"missing required parameter {self._name(name)!r}", self._name(name))
        return value

    @overload
    def string(self, name: str, *, required: Literal[True], max_length: int = ...) -> str: ...
    @overload
    def string(self, name: str, *, default: str, max_length: int = ...) -> str: ...
    @overload
    def string(self, name: str, *, max_length: int = ...) -> str | None: ...

    def string(self, name: str, *, required: bool = False, default: str | None = None,
               max_length: int = MAX_TEXT) -> str | None:
        """A string field; ``required`` or a ``default`` make the result a ``str``."""
        value = self._get(name, required)
        if value is None:
            return default
        if not isinstance(value, str):
            raise bad_request(f"{self._name(name)!r} must be a string", self._name(name))
        if len(value) > max_length:
            raise bad_request(f"{self._name(name)!r} is longer than {max_length}", self._name(name))
        return value

    @overload
    def integer(self, name: str, low: int, high: int, default: int) -> int: ...
    @overload
    def integer(self, name: str, low: int, high: int, default: None = None) -> int | None: ...

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int | None:
        """An integer in [low, high]; ``default`` (which makes the result an ``int``) when absent."""
        value = self._get(name, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"{self._name(name)!r} must be an integer", self._name(name))
        if not low <= value <= high:
            raise bad_request(f"{self._name(name)!r} must be in [{low}, {high}], got {value}",
                              self._name(name))
        return value

    @overload
    def number(self, name: str, low: float, high: float, default: float) -> float: ...
    @overload
    def number(self, name: str, low: float, high: float, default: None = None) -> float | None: ...

    def number(self, name: str, low: float, high: float, default: float | None = None) -> float | None:
        """A finite number in [low, high]; ``default`` (which makes the result a ``float``) when absent."""
        value = self._get(name, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad_request(f"{self._name(name)!r} must be a number", self._name(name))
        if not low <= value <= high:
            raise bad_request(f"{self._name(name)!r} must be in [{low}, {high}], got {value}",
                              self._name(name))
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise bad_request(f"{self._name(name)!r} must be true or false", self._name(name))
        return value

    def stops(self, name: str) -> tuple[str, ...]:
        """A stop string or a list of them (empty strings refused)."""
        value = self._get(name, False)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or len(items) > MAX_STOP_STRINGS
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in items)
        ):
            raise bad_request(
                f"{self._name(name)!r} must be a non-empty string or a list of at most "
                f"{MAX_STOP_STRINGS} (each 1..{MAX_STOP_LENGTH} characters)",
                self._name(name),
            )
        return tuple(items)

    def nested(self, name: str) -> "Fields":
        value = self._get(name, False)
        return Fields({} if value is None else value, self._name(name))

    def messages(self, name: str = "messages") -> tuple[dict[str, str], ...]:
        """Chat turns: role and text content (OpenAI's list-of-parts content is joined)."""
        value = self._get(name, True)
        if not isinstance(value, list) or not value:
            raise bad_request(f"{name!r} must be a non-empty list", name)
        turns = []
        for index, item in enumerate(value):
            turn = Fields(item, f"{name}[{index}]")
            role = turn.string("role", required=True, max_length=32)
            if role not in ("system", "developer", "user", "assistant", "tool"):
                where = f"{name}[{index}].role"
                raise bad_request(f"{where} {role!r} is not a chat role", where)
            turns.append({"role": "system" if role == "developer" else role,
                          "content": turn.content()})
        return tuple(turns)

    def content(self) -> str:
        value = self.body.get("content")
        if value is None:
            return ""
        if isinstance(value, str):
            return value[:MAX_TEXT]
        if isinstance(value, list):
            parts = []
            for part in value:
                is_text = isinstance(part, Mapping) and part.get("type") == "text"
                text = part.get("text") if is_text else None
                if not isinstance(text, str):
                    raise bad_request(f"{self._name('content')}: only text parts are supported",
                                      self._name("content"))
                parts.append(text)
            return "".join(parts)[:MAX_TEXT]
        raise bad_request(f"{self._name('content')!r} must be a string or a list of text parts",
                          self._name("content"))


def compaction(fields: Fields) -> dict[str, Any]:
    """A request's own KV compaction (OpenAI: top-level fields; Ollama: in ``options``):
    ``kv_compaction`` (off, on or auto) and ``kv_compaction_ratio``; the node's when absent."""
    mode = fields.string("kv_compaction", max_length=8)
    if mode is not None and mode not in MODES:
        raise bad_request(f"'kv_compaction' must be one of {', '.join(MODES)}", fields._name("kv_compaction"))
    ratio = fields.number("kv_compaction_ratio", 1.0, MAX_RATIO)
    if ratio is not None and ratio <= 1.0:
        raise bad_request("'kv_compaction_ratio' must be above 1", fields._name("kv_compaction_ratio"))
    return {"kv_compaction": mode, "kv_compaction_ratio": ratio}
