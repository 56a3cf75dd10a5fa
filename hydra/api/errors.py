"""API errors: one exception type, rendered in the shape each API family's clients expect,
and the mapping from the ``HydraError`` raised below the API to it."""

from typing import Any

from hydra.coordinator.routing import NoRoute
from hydra.errors import HydraError


class APIError(HydraError):
    """A request the API refuses: status, message, and OpenAI's ``type``/``param``/``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param, code="invalid_value" if param else None)


def no_route(message: str) -> APIError:
    return APIError(503, message, type="service_unavailable", code="no_route")


def from_error(exc: HydraError) -> APIError:
    """How the API reports a failure raised below it, with that failure's HTTP status."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, NoRoute):
        return no_route(str(exc))
    status = exc.http_status
    kind = "invalid_request_error" if status < 500 else "server_error"
    return APIError(status, str(exc), type="service_unavailable" if status == 503 else kind,
                    param=exc.param, code="invalid_value" if exc.param else exc.api_code)


def openai_body(error: APIError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def ollama_body(error: APIError) -> dict[str, Any]:
    return {"error": error.message}


def hydra_body(code: str, message: str) -> dict[str, Any]:
    """Our own endpoints' error shape (the HTTP DHT, status, health)."""
    return {"error": {"code": code, "message": message}}
