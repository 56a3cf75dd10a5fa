"""Each endpoint the SDK calls, as a ``Call``: method, path, body, how to read the answer and
whether repeating it is safe. Pure data: both clients send these."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from hydra.sdk.parse import build
from hydra.sdk.types import (
    Balance,
    ChatCompletion,
    Chunk,
    Completion,
    HydraAccount,
    Message,
    Model,
    NetworkStatus,
    OpenedChannel,
    Readiness,
)

T = TypeVar("T")
DEGRADATION_HEADER = "x-openhydra-degradation-reason"
OK = frozenset({200})

Amount = float | int | str | Decimal  # HYDRA: a number or a decimal string, six decimals at most
Messages = Sequence[Mapping[str, Any] | Message]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any, Mapping[str, str]], T]  # (JSON body, headers); a stream's: each event
    body: dict[str, Any] | None = None
    idempotent: bool = True  # safe to repeat after a 503 or a lost answer (see hydra.sdk.retry)
    money: bool = False  # moves HYDRA: sent with the operator's token
    accept: frozenset[int] = OK  # statuses whose body is a result, not an error


def reading(cls: type[T]) -> Callable[[Any, Mapping[str, str]], T]:
    return lambda body, headers: build(cls, body)


def degraded(cls: type[T]) -> Callable[[Any, Mapping[str, str]], T]:
    """A generation's result, with why a smaller model answered when one did."""
    return lambda body, headers: replace(build(cls, body), degradation=headers.get(DEGRADATION_HEADER))


def chat(messages: Messages, model: str, stream: bool, params: Mapping[str, Any]) -> Call[Any]:
    turns = [{"role": m.role, "content": m.content} if isinstance(m, Message) else dict(m) for m in messages]
    body = {**params, "model": model, "messages": turns, "stream": stream}
    return Call("POST", "/v1/chat/completions", reading(Chunk) if stream else degraded(ChatCompletion), body)


def complete(prompt: str | Sequence[int], model: str, stream: bool, params: Mapping[str, Any]) -> Call[Any]:
    body = {**params, "model": model, "prompt": prompt if isinstance(prompt, str) else list(prompt),
            "stream": stream}
    return Call("POST", "/v1/completions", reading(Chunk) if stream else degraded(Completion), body)


@dataclass(frozen=True)
class ModelList:
    data: tuple[Model, ...] = ()


def models() -> Call[tuple[Model, ...]]:
    return Call("GET", "/v1/models", lambda body, headers: build(ModelList, body).data)


def model(name: str) -> Call[Model]:
    return Call("GET", f"/v1/models/{quote(name, safe='')}", reading(Model))


def network_status() -> Call[NetworkStatus]:
    return Call("GET", "/v1/network/status", reading(NetworkStatus))


def health() -> Call[bool]:
    return Call("GET", "/health", lambda body, headers: isinstance(body, dict) and body.get("status") == "ok")


def ready() -> Call[Readiness]:
    """``/readyz`` answers 503 with the same body while the default model has no route."""
    return Call("GET", "/readyz", reading(Readiness), accept=frozenset({200, 503}))


def balance() -> Call[Balance]:
    return Call("GET", "/v1/account/balance", reading(Balance))


def amount(value: Amount) -> float | int | str:
    return str(value) if isinstance(value, Decimal) else value  # a Decimal keeps its digits


def money(path: str, body: dict[str, Any], parse: Callable[[Any, Mapping[str, str]], T]) -> Call[T]:
    return Call("POST", path, parse, body, idempotent=False, money=True)


def stake(value: Amount) -> Call[HydraAccount]:
    return money("/v1/hydra/stake", {"amount": amount(value)}, reading(HydraAccount))


def unstake(value: Amount) -> Call[HydraAccount]:
    return money("/v1/hydra/unstake", {"amount": amount(value)}, reading(HydraAccount))


def open_channel(peer: str, deposit: Amount) -> Call[OpenedChannel]:
    def parse(body: Any, headers: Mapping[str, str]) -> OpenedChannel:
        return OpenedChannel(build(ChannelId, body).id, build(HydraAccount, body))

    return money("/v1/hydra/channels/open", {"peer": peer, "deposit": amount(deposit)}, parse)


@dataclass(frozen=True)
class ChannelId:
    id: str


def close_channel(channel_id: str) -> Call[HydraAccount]:
    return money("/v1/hydra/channels/close", {"id": channel_id}, reading(HydraAccount))
