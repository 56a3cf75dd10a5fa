"""hydra.sdk.errors: both of a node's error shapes (and bodies in neither) become the
exception that says what the caller can do, and Retry-After is read in both its forms."""

from email.utils import formatdate

import pytest

from hydra.sdk.errors import (
    BadRequest,
    Forbidden,
    HydraAPIError,
    NoRoute,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    from_response,
    retry_after,
    stream_error,
)


def openai(message: str, code: str | None, type: str = "invalid_request_error", param: str | None = None):
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (400, openai("'temperature' must be in [0.0, 2.0]", "invalid_value", param="temperature"),
         BadRequest, "invalid_value"),
        (403, openai("served to this machine only", "operator_only", "permission_error"), Forbidden,
         "operator_only"),
        (404, openai("The model 'x' does not exist", "model_not_found", param="model"), NotFound,
         "model_not_found"),
        (429, openai("rate limit exceeded", "rate_limit_exceeded", "rate_limit_exceeded"), RateLimited,
         "rate_limit_exceeded"),
        (503, openai("no peers cover tiny", "no_route", "service_unavailable"), NoRoute, "no_route"),
        (503, openai("shutting down", "shutting_down", "service_unavailable"), ServiceUnavailable,
         "shutting_down"),
        (503, openai("no HYDRA token federation", None, "service_unavailable"), ServiceUnavailable, None),
        (404, {"error": {"code": "not_found", "message": "no such record"}}, NotFound, "not_found"),  # hydra
        (500, openai("internal error", "internal", "server_error"), HydraAPIError, "internal"),
    ],
)
def test_each_status_and_shape_maps_to_its_exception(status, body, kind, code) -> None:
    error = from_response(status, body, {})
    assert type(error) is kind and error.status == status and error.code == code
    assert error.message == body["error"]["message"] and error.body == body
    assert error.message in str(error)


def test_the_parameter_and_type_are_kept() -> None:
    error = from_response(400, openai("'top_p' must be above 0", "invalid_value", param="top_p"), {})
    assert error.param == "top_p" and error.type == "invalid_request_error"


def test_a_body_in_no_known_shape_still_gives_a_message() -> None:
    assert from_response(502, "Bad Gateway", {}).message == "Bad Gateway"  # a proxy's text page
    assert from_response(400, {"error": "invalid template"}, {}).message == "invalid template"  # Ollama's
    assert from_response(503, {"unexpected": 1}, {}).message == "HTTP 503"
    assert type(from_response(418, None, {})) is HydraAPIError


def test_rate_limited_carries_retry_after_in_seconds() -> None:
    error = from_response(429, openai("slow down", "rate_limit_exceeded"), {"retry-after": "2"})
    assert isinstance(error, RateLimited) and error.retry_after == 2.0
    assert from_response(429, {}, {}).retry_after is None


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert retry_after("7", lambda: now) == 7.0
    assert retry_after(formatdate(now + 30, usegmt=True), lambda: now) == 30.0
    assert retry_after(formatdate(now - 30, usegmt=True), lambda: now) == 0.0  # already past
    assert retry_after("soon", lambda: now) is None
    assert retry_after(None) is None and retry_after("") is None


def test_an_error_event_inside_a_stream_has_no_status() -> None:
    error = stream_error(openai("this node is shutting down", "shutting_down", "service_unavailable"))
    assert error.status is None and error.code == "shutting_down" and error.type == "service_unavailable"
