"""A node scripted for the SDK's unit tests: an ``httpx.MockTransport`` handler that answers
from a list (its last answer repeating) and records what it was asked."""

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

Answer = httpx.Response | Exception


class Script:
    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer.stream, httpx.ByteStream):  # a fresh copy: the last one may repeat
            return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)
        return answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    @property
    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


class Sleeps(list[float]):
    """A fake ``sleep`` (and its async twin) that only records how long it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def wait(self, seconds: float) -> None:
        self.append(seconds)


def error(status: int, message: str, code: str | None = None, *, type: str = "invalid_request_error",
          param: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """An error in OpenAI's shape, as a node answers under /v1/."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def chunk(text: str | None = None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
    delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
    return {"id": "chatcmpl-1", "created": 1, "model": "tiny", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def sse(*payloads: Any, done: bool = True) -> bytes:
    events = [f"data: {json.dumps(p)}\n\n" for p in payloads] + (["data: [DONE]\n\n"] if done else [])
    return "".join(events).encode()


def cut_after(data: bytes) -> Iterator[bytes]:
    """A body that breaks off after ``data``: the connection lost mid-stream."""
    yield data
    raise httpx.ReadError("connection reset by peer")


async def cut_after_async(data: bytes) -> AsyncIterator[bytes]:
    yield data
    raise httpx.ReadError("connection reset by peer")


SSE = {"content-type": "text/event-stream"}
COMPLETION = {"id": "chatcmpl-2", "created": 1, "model": "tiny", "object": "chat.completion",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                           "logprobs": None, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
