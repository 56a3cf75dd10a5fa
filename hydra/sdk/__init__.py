"""The Python SDK: typed clients of a node's HTTP API, for apps.

    from hydra.sdk import Client
    with Client("http://127.0.0.1:8080") as node:
        print(node.chat([{"role": "user", "content": "Hi"}], temperature=0).text)
        for chunk in node.chat([{"role": "user", "content": "Tell me a story"}], stream=True):
            print(chunk.delta, end="")
        print(node.network_status().peer_id, node.balance().barter.credits)

``AsyncClient`` has the same methods, awaited. Results are frozen dataclasses
(``hydra.sdk.types``); refusals are ``HydraAPIError`` subclasses (``hydra.sdk.errors``);
429, 503 and lost connections are retried within bounds (``hydra.sdk.retry`` says when).
Needs httpx only: importing it loads nothing else of OpenHydra (no torch, no libp2p)."""

from hydra.sdk.async_client import AsyncClient, AsyncStream
from hydra.sdk.client import Client, Stream
from hydra.sdk.errors import (
    BadRequest,
    ConnectionFailed,
    Forbidden,
    HydraAPIError,
    NoRoute,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    StreamError,
    UnexpectedResponse,
)
from hydra.sdk.retry import Retry, RetryPolicy
from hydra.sdk.types import (
    Announce,
    Balance,
    Barter,
    Channel,
    ChatChoice,
    ChatCompletion,
    Chunk,
    ChunkChoice,
    ChunkDelta,
    Completion,
    CompletionChoice,
    Economy,
    Federation,
    Hop,
    HydraAccount,
    LiveGeneration,
    Message,
    Model,
    NetworkStatus,
    OpenedChannel,
    PeerScore,
    Promotion,
    Readiness,
    Signposts,
    StageStatus,
    Usage,
    Verification,
)

__all__ = [
    "Announce",
    "AsyncClient",
    "AsyncStream",
    "BadRequest",
    "Balance",
    "Barter",
    "Channel",
    "ChatChoice",
    "ChatCompletion",
    "Chunk",
    "ChunkChoice",
    "ChunkDelta",
    "Client",
    "Completion",
    "CompletionChoice",
    "ConnectionFailed",
    "Economy",
    "Federation",
    "Forbidden",
    "Hop",
    "HydraAPIError",
    "HydraAccount",
    "LiveGeneration",
    "Message",
    "Model",
    "NetworkStatus",
    "NoRoute",
    "NotFound",
    "OpenedChannel",
    "PeerScore",
    "Promotion",
    "RateLimited",
    "Readiness",
    "Retry",
    "RetryPolicy",
    "ServiceUnavailable",
    "Signposts",
    "StageStatus",
    "Stream",
    "StreamError",
    "UnexpectedResponse",
    "Usage",
    "Verification",
]
