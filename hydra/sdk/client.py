"""The synchronous client: ``Client``, and the ``Stream`` a streamed reply arrives in."""

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

import httpx

from hydra.sdk import calls
from hydra.sdk.calls import DEGRADATION_HEADER, Amount, Call, Messages
from hydra.sdk.core import ClientCore, transport_errors
from hydra.sdk.errors import HydraAPIError
from hydra.sdk.sse import EventStream
from hydra.sdk.types import (
    Balance,
    ChatCompletion,
    Chunk,
    Completion,
    HydraAccount,
    Model,
    NetworkStatus,
    OpenedChannel,
    Readiness,
)

T = TypeVar("T")


class Stream(Generic[T]):
    """A streamed reply's chunks as they arrive; iterate it once. It closes itself at its end
    or on an error; close it (``with``, ``close()``) to stop early, which cancels the
    generation on the node. A failure while iterating is never retried: ``StreamError`` when
    the node reported one, ``ConnectionFailed`` when the connection was lost."""

    def __init__(self, response: httpx.Response, parse: Callable[[Any, Mapping[str, str]], T]) -> None:
        self.response = response
        self.degradation = response.headers.get(DEGRADATION_HEADER)  # why a smaller model answers
        self._events = EventStream(lambda payload: parse(payload, response.headers))

    def __iter__(self) -> Iterator[T]:
        try:
            with transport_errors():
                for line in self.response.iter_lines():
                    if (event := self._events.feed(line)) is not None:
                        yield event
                    if self._events.done:
                        return
                self._events.end()
        finally:
            self.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> "Stream[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(ClientCore):
    """A node's API (see ``ClientCore`` for the options). ``with Client() as client:``
    closes its connections at the end."""

    http_class = httpx.Client
    default_sleep = time.sleep
    _http: httpx.Client

    # --- transport ----------------------------------------------------------------------------

    def _send(self, call: Call[Any], stream: bool = False) -> httpx.Response:
        """The answer to ``call`` with a status it accepts, after the retries allowed."""
        attempts = self._attempts(call)
        while True:
            try:
                return self._check(call, self._attempt(call, stream))
            except HydraAPIError as error:
                if (delay := attempts.after(error)) is None:
                    raise
                self._sleep(delay)

    def _attempt(self, call: Call[Any], stream: bool) -> httpx.Response:
        with transport_errors():
            response = self._http.send(self._request(call), stream=stream)
            if stream and response.status_code not in call.accept:
                response.read()  # the error's body
            return response

    def _run(self, call: Call[T]) -> T:
        return self._result(call, self._send(call))

    def _stream(self, call: Call[T]) -> Stream[T]:
        return Stream(self._send(call, stream=True), call.parse)

    def _pick(self, model: str | None) -> str:
        return model or self._default_model or self._remember_default(self.ready())

    # --- generation ---------------------------------------------------------------------------

    @overload
    def chat(self, messages: Messages, model: str | None = None, *, stream: Literal[False] = False,
             **params: Any) -> ChatCompletion: ...
    @overload
    def chat(self, messages: Messages, model: str | None = None, *, stream: Literal[True],
             **params: Any) -> Stream[Chunk]: ...

    def chat(self, messages: Messages, model: str | None = None, *, stream: bool = False,
             **params: Any) -> ChatCompletion | Stream[Chunk]:
        """A chat completion of ``messages`` (dicts with ``role`` and ``content``, or
        ``Message``s); ``params`` are the request's other fields (``max_tokens``,
        ``temperature``: 0 for greedy, ``stop``, ``seed``...). ``stream=True``: a ``Stream`` of
        ``Chunk``s, returned once the node accepted the request (errors before that raise here)."""
        call = calls.chat(messages, self._pick(model), stream, params)
        return self._stream(call) if stream else self._run(call)

    @overload
    def complete(self, prompt: str | Sequence[int], model: str | None = None, *,
                 stream: Literal[False] = False, **params: Any) -> Completion: ...
    @overload
    def complete(self, prompt: str | Sequence[int], model: str | None = None, *,
                 stream: Literal[True], **params: Any) -> Stream[Chunk]: ...

    def complete(self, prompt: str | Sequence[int], model: str | None = None, *, stream: bool = False,
                 **params: Any) -> Completion | Stream[Chunk]:
        """A text completion of ``prompt`` (text, or token ids), sent as it is."""
        call = calls.complete(prompt, self._pick(model), stream, params)
        return self._stream(call) if stream else self._run(call)

    def models(self) -> tuple[Model, ...]:
        """Every catalog model, those a complete route serves now (``routable``) first."""
        return self._run(calls.models())

    def model(self, name: str) -> Model:
        """One model, by id or alias (the id answered is the catalog's)."""
        return self._run(calls.model(name))

    # --- the node -----------------------------------------------------------------------------

    def network_status(self) -> NetworkStatus:
        return self._run(calls.network_status())

    def health(self) -> bool:
        """Whether the node is alive (exempt from rate limits); ``ConnectionFailed`` when
        nothing answers (after the retries: pass ``RetryPolicy(max_retries=0)`` to probe)."""
        return self._run(calls.health())

    def ready(self) -> Readiness:
        """Whether a complete route serves the default model now (exempt from rate limits)."""
        return self._run(calls.ready())

    # --- economy ------------------------------------------------------------------------------

    def balance(self) -> Balance:
        """Barter credits, and HYDRA when a token federation answered the node."""
        return self._run(calls.balance())

    def stake(self, amount: Amount) -> HydraAccount:
        """Stake ``amount`` HYDRA (operator only); the account after it."""
        return self._run(calls.stake(amount))

    def unstake(self, amount: Amount) -> HydraAccount:
        return self._run(calls.unstake(amount))

    def open_channel(self, peer: str, deposit: Amount) -> OpenedChannel:
        """Open a payment channel to ``peer`` locking ``deposit`` HYDRA (operator only)."""
        return self._run(calls.open_channel(peer, deposit))

    def close_channel(self, channel_id: str) -> HydraAccount:
        return self._run(calls.close_channel(channel_id))

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
