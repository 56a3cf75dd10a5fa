"""The asynchronous client: ``AsyncClient`` (asyncio or trio, through httpx and anyio), and
the ``AsyncStream`` a streamed reply arrives in."""

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

import anyio
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


class AsyncStream(Generic[T]):
    """``Stream``, asynchronously: ``async for chunk in stream``; ``async with`` or
    ``aclose()`` to stop early."""

    def __init__(self, response: httpx.Response, parse: Callable[[Any, Mapping[str, str]], T]) -> None:
        self.response = response
        self.degradation = response.headers.get(DEGRADATION_HEADER)
        self._events = EventStream(lambda payload: parse(payload, response.headers))

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            with transport_errors():
                async for line in self.response.aiter_lines():
                    if (event := self._events.feed(line)) is not None:
                        yield event
                    if self._events.done:
                        return
                self._events.end()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> "AsyncStream[T]":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncClient(ClientCore):
    """``Client``'s methods, awaited (the same options, results, errors and retries); a
    streamed reply is an ``AsyncStream``: ``async for chunk in await client.chat(...,
    stream=True)``. ``async with AsyncClient() as client:`` closes its connections."""

    http_class = httpx.AsyncClient
    default_sleep = anyio.sleep
    _http: httpx.AsyncClient

    async def _send(self, call: Call[Any], stream: bool = False) -> httpx.Response:
        attempts = self._attempts(call)
        while True:
            try:
                return self._check(call, await self._attempt(call, stream))
            except HydraAPIError as error:
                if (delay := attempts.after(error)) is None:
                    raise
                await self._sleep(delay)

    async def _attempt(self, call: Call[Any], stream: bool) -> httpx.Response:
        with transport_errors():
            response = await self._http.send(self._request(call), stream=stream)
            if stream and response.status_code not in call.accept:
                await response.aread()
            return response

    async def _run(self, call: Call[T]) -> T:
        return self._result(call, await self._send(call))

    async def _stream(self, call: Call[T]) -> AsyncStream[T]:
        return AsyncStream(await self._send(call, stream=True), call.parse)

    async def _pick(self, model: str | None) -> str:
        return model or self._default_model or self._remember_default(await self.ready())

    @overload
    async def chat(self, messages: Messages, model: str | None = None, *, stream: Literal[False] = False,
                   **params: Any) -> ChatCompletion: ...
    @overload
    async def chat(self, messages: Messages, model: str | None = None, *, stream: Literal[True],
                   **params: Any) -> AsyncStream[Chunk]: ...

    async def chat(self, messages: Messages, model: str | None = None, *, stream: bool = False,
                   **params: Any) -> ChatCompletion | AsyncStream[Chunk]:
        call = calls.chat(messages, await self._pick(model), stream, params)
        return await (self._stream(call) if stream else self._run(call))

    @overload
    async def complete(self, prompt: str | Sequence[int], model: str | None = None, *,
                       stream: Literal[False] = False, **params: Any) -> Completion: ...
    @overload
    async def complete(self, prompt: str | Sequence[int], model: str | None = None, *,
                       stream: Literal[True], **params: Any) -> AsyncStream[Chunk]: ...

    async def complete(self, prompt: str | Sequence[int], model: str | None = None, *,
                       stream: bool = False, **params: Any) -> Completion | AsyncStream[Chunk]:
        call = calls.complete(prompt, await self._pick(model), stream, params)
        return await (self._stream(call) if stream else self._run(call))

    async def models(self) -> tuple[Model, ...]:
        return await self._run(calls.models())

    async def model(self, name: str) -> Model:
        return await self._run(calls.model(name))

    async def network_status(self) -> NetworkStatus:
        return await self._run(calls.network_status())

    async def health(self) -> bool:
        return await self._run(calls.health())

    async def ready(self) -> Readiness:
        return await self._run(calls.ready())

    async def balance(self) -> Balance:
        return await self._run(calls.balance())

    async def stake(self, amount: Amount) -> HydraAccount:
        return await self._run(calls.stake(amount))

    async def unstake(self, amount: Amount) -> HydraAccount:
        return await self._run(calls.unstake(amount))

    async def open_channel(self, peer: str, deposit: Amount) -> OpenedChannel:
        return await self._run(calls.open_channel(peer, deposit))

    async def close_channel(self, channel_id: str) -> HydraAccount:
        return await self._run(calls.close_channel(channel_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
