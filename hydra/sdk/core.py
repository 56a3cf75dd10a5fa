"""What the sync and async clients share: their configuration, the request each ``Call``
becomes, reading an answer into a result or an exception, and each call's retry bookkeeping.
The clients themselves only move bytes and sleep."""

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from hydra.sdk.calls import Call
from hydra.sdk.errors import ConnectionFailed, UnexpectedResponse, from_response
from hydra.sdk.retry import Attempts, Retry, RetryPolicy
from hydra.sdk.types import Readiness

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8080"
# a whole reply arrives in one read unless streamed: allow a long generation, not a dead dial
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
# what the node refuses before anything reached it
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@contextmanager
def transport_errors() -> Iterator[None]:
    """httpx's transport failures as ``ConnectionFailed``."""
    try:
        yield
    except httpx.TransportError as exc:
        sent = not isinstance(exc, UNSENT)
        raise ConnectionFailed(f"{type(exc).__name__}: {exc}", request_sent=sent) from exc


def json_or_text(response: httpx.Response) -> Any:
    """A read response's body as JSON, or as text when it is not JSON."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text


class ClientCore:
    """``base_url``: the node's API (a trailing ``/v1``, as OpenAI clients take it, is
    dropped). ``money_token``: the node's ``HYDRA_MONEY_TOKEN``, sent (as ``Authorization:
    Bearer``) with money calls only; a client on the node's own machine needs none.
    ``timeout``: per attempt. ``retry``: see ``hydra.sdk.retry``; ``on_retry`` hears each
    retry before its wait. ``transport``: an httpx transport (tests pass
    ``httpx.MockTransport``); ``sleep`` and ``clock`` (wall time, for an HTTP-date
    ``Retry-After``) can be replaced too.

    Without ``model=``, generations use the node's default model as ``/readyz`` names it
    (asked once per client): the model the node's readiness is about and ``hydra chat``
    uses, and ``/readyz`` costs no rate-limit slot."""

    http_class: type[httpx.Client] | type[httpx.AsyncClient]
    default_sleep: Callable[[float], Any]  # time.sleep, or an awaitable sleep

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        money_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        on_retry: Callable[[Retry], None] | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.retry = retry
        self._money_token = money_token
        self._on_retry = on_retry
        self._clock = clock
        self._sleep = type(self).default_sleep if sleep is None else sleep
        self._default_model: str | None = None
        self._http: Any = self.http_class(
            base_url=self.base_url, timeout=timeout, headers=dict(headers or {}), transport=transport
        )

    def _request(self, call: Call[Any]) -> httpx.Request:
        headers = {"Authorization": f"Bearer {self._money_token}"} if call.money and self._money_token else {}
        return self._http.build_request(call.method, call.path, json=call.body, headers=headers)

    def _attempts(self, call: Call[Any]) -> Attempts:
        return Attempts(self.retry, call.idempotent, self._on_retry)

    def _check(self, call: Call[Any], response: httpx.Response) -> httpx.Response:
        """``response`` if its status is one ``call`` accepts; else its error (body read)."""
        if response.status_code not in call.accept:
            raise from_response(response.status_code, json_or_text(response), response.headers, self._clock)
        return response

    def _result(self, call: Call[T], response: httpx.Response) -> T:
        """An answer with an accepted status (its body read) as ``call``'s result."""
        body = json_or_text(response)
        if isinstance(body, str):
            raise UnexpectedResponse(response.status_code, None, "the node's answer is not JSON", body=body)
        return call.parse(body, response.headers)

    def _remember_default(self, readiness: Readiness) -> str:
        if not readiness.model:
            raise UnexpectedResponse(None, None, "the node names no default model: pass model=")
        self._default_model = readiness.model
        return readiness.model
