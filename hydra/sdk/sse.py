"""Server-sent events as a node streams them: ``data:`` lines (joined when an event has
several) dispatched at a blank line, ``data: [DONE]`` at the end, and an ``{"error": ...}``
payload when the generation failed after the stream began. Fed line by line, so the sync
and async streams share it."""

import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from hydra.sdk.errors import ConnectionFailed, UnexpectedResponse, stream_error

T = TypeVar("T")
DONE = "[DONE]"


class EventStream(Generic[T]):
    def __init__(self, parse: Callable[[Any], T]) -> None:
        self.parse = parse
        self.data: list[str] = []
        self.done = False

    def feed(self, line: str) -> T | None:
        """The event ``line`` completes, if any; raises ``StreamError`` on an error event."""
        if line.startswith("data:"):
            value = line[5:]
            self.data.append(value[1:] if value.startswith(" ") else value)
            return None
        if line or not self.data:  # other fields (event:, id:, comments) carry nothing we use
            return None
        data, self.data = "\n".join(self.data), []
        if data == DONE:
            self.done = True
            return None
        try:
            payload = json.loads(data)
        except ValueError:
            raise UnexpectedResponse(None, None, "a stream event that is not JSON", body=data) from None
        if isinstance(payload, dict) and "error" in payload:
            raise stream_error(payload)
        return self.parse(payload)

    def end(self) -> None:
        """At the end of the body: a stream cut before ``[DONE]`` is a lost connection."""
        self.feed("")  # an unterminated last event
        if not self.done:
            raise ConnectionFailed("the stream ended before its [DONE]", request_sent=True)
