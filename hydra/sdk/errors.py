"""The SDK's exceptions, and how an HTTP answer becomes one.

A node answers errors in two shapes: OpenAI's ``{"error": {"message", "type", "param",
"code"}}`` under ``/v1/`` and its own ``{"error": {"code", "message"}}`` elsewhere (and on
``/v1/network/status``); both read the same here. The class says what the caller can do
about it, ``code`` says exactly what the node refused (``no_route``, ``operator_only``...)."""

import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any


class HydraAPIError(Exception):
    """A call the node refused, or that could not reach it; ``status`` is None when no HTTP
    status applies (the connection failed, or the error arrived inside a stream)."""

    def __init__(self, status: int | None, code: str | None, message: str, param: str | None = None,
                 body: Any = None, *, type: str | None = None) -> None:
        label = " ".join(str(part) for part in (status, code) if part)
        super().__init__(f"{label}: {message}" if label else message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.body = body
        self.type = type


class BadRequest(HydraAPIError):
    """400: a parameter the node refuses (``param`` names it)."""


class Forbidden(HydraAPIError):
    """403: a money call from off the node's machine without the operator's token."""


class NotFound(HydraAPIError):
    """404: an unknown model (the message lists the known ones) or path."""


class RateLimited(HydraAPIError):
    """429: too many requests from this address; ``retry_after`` in seconds, when given."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailable(HydraAPIError):
    """503: the node cannot serve this now (``code``: ``shutting_down``, ``overloaded``...)."""


class NoRoute(ServiceUnavailable):
    """503 ``no_route``: no peers cover the model, nor a smaller one to degrade to."""


class StreamError(HydraAPIError):
    """An SSE ``error`` event after the stream had begun: the reply so far is incomplete."""


class ConnectionFailed(HydraAPIError):
    """No answer: the node could not be reached, or dropped the connection or timed out.
    ``request_sent`` is False only when the request certainly never reached the node."""

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(None, None, message)
        self.request_sent = request_sent


class UnexpectedResponse(HydraAPIError):
    """An answer the SDK cannot read (not JSON, or missing a field every version sends)."""


BY_STATUS: dict[int, type[HydraAPIError]] = {
    400: BadRequest, 403: Forbidden, 404: NotFound, 429: RateLimited, 503: ServiceUnavailable,
}


def retry_after(value: str | None, clock: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds from now: delta-seconds or an HTTP date; None when absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock())


def error_fields(body: Any) -> dict[str, Any]:
    """``message``, ``code``, ``type`` and ``param`` from either error shape (or a bare
    ``{"error": "text"}``); empty when the body is neither."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, str):
        return {"message": error}
    if not isinstance(error, Mapping):
        return {}
    return {k: v for k in ("message", "code", "type", "param") if isinstance(v := error.get(k), str)}


def from_response(status: int, body: Any, headers: Mapping[str, str],
                  clock: Callable[[], float] = time.time) -> HydraAPIError:
    """The exception for an error answer; ``body`` is its JSON, or its text when not JSON."""
    fields = error_fields(body)
    message = fields.get("message") or (body if isinstance(body, str) and body else f"HTTP {status}")
    args = (status, fields.get("code"), message, fields.get("param"), body)
    if status == 429:
        wait = retry_after(headers.get("retry-after"), clock)
        return RateLimited(*args, type=fields.get("type"), retry_after=wait)
    if status == 503 and fields.get("code") == "no_route":
        return NoRoute(*args, type=fields.get("type"))
    return BY_STATUS.get(status, HydraAPIError)(*args, type=fields.get("type"))


def stream_error(payload: Mapping[str, Any]) -> StreamError:
    """The error event a node sends when a stream fails after it began."""
    fields = error_fields(payload)
    return StreamError(None, fields.get("code"), fields.get("message", "the stream failed"),
                       fields.get("param"), payload, type=fields.get("type"))
