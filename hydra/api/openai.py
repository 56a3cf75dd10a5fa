"""OpenAI-compatible endpoints: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Streams follow what the official client relies on: one ``id`` and ``created`` for every chunk,
a first chunk carrying ``delta.role``, content chunks with ``finish_reason: null``, a final
chunk per choice with its ``finish_reason``, a usage chunk with ``choices: []`` when
``stream_options.include_usage`` is set, then ``data: [DONE]``. An error after the stream has
begun is sent as an SSE ``error`` payload. ``presence_penalty``, ``frequency_penalty``,
``user`` and other unknown fields are accepted and ignored; ``repetition_penalty`` is honoured.
"""

import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from quart import Blueprint, Response

from hydra.api.errors import APIError, bad_request, openai_body
from hydra.api.fields import Fields
from hydra.api.service import GenerationService, Resolved
from hydra.coordinator.generation import Completion, Delta, GenerationRequest, TokenLogprob
from hydra.coordinator.sampling import SamplingParams
from hydra.dht.http_adapter import read_json

MAX_TOKENS_LIMIT = 32768
MAX_N = 8


@dataclass(frozen=True)
class OpenAIRequest:
    generation: GenerationRequest
    n: int
    stream: bool
    include_usage: bool
    chat: bool
    logprobs: bool


async def json_body() -> Any:
    body = await read_json()
    if body is None:
        raise bad_request("the request body must be valid JSON")
    return body


def sampling(fields: Fields, default_max_tokens: int, logprob_field: str) -> tuple[SamplingParams, int | None]:
    max_tokens = fields.integer("max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = fields.integer("max_tokens", 1, MAX_TOKENS_LIMIT, default_max_tokens)
    for ignored in ("presence_penalty", "frequency_penalty"):
        fields.number(ignored, -2.0, 2.0)
    top_p = fields.number("top_p", 0.0, 1.0, 1.0)
    if top_p == 0:
        raise bad_request("'top_p' must be above 0", "top_p")
    params = SamplingParams(
        max_tokens=max_tokens,  # type: ignore[arg-type]
        temperature=fields.number("temperature", 0.0, 2.0, 1.0),  # type: ignore[arg-type]
        top_p=top_p,  # type: ignore[arg-type]
        top_k=fields.integer("top_k", 0, 1 << 20, 0),  # type: ignore[arg-type]
        seed=fields.integer("seed", -(1 << 63), (1 << 63) - 1),
        repetition_penalty=fields.number("repetition_penalty", 0.01, 10.0, 1.0),  # type: ignore[arg-type]
        stop=fields.stops("stop"),
    )
    if logprob_field == "top_logprobs":  # chat: logprobs is a flag, top_logprobs a count
        wanted = fields.boolean("logprobs", False)
        top = fields.integer("top_logprobs", 0, 20, 0)
        return params, (top if wanted else None)
    return params, fields.integer("logprobs", 0, 5)  # completions: the count itself


def parse(body: Any, chat: bool, default_max_tokens: int) -> OpenAIRequest:
    fields = Fields(body)
    model = fields.string("model", required=True, max_length=256)
    params, top_logprobs = sampling(fields, default_max_tokens, "top_logprobs" if chat else "logprobs")
    if chat:
        generation = GenerationRequest(model, messages=fields.messages(), params=params,  # type: ignore[arg-type]
                                       top_logprobs=top_logprobs)
    else:
        generation = GenerationRequest(model, params=params, top_logprobs=top_logprobs,  # type: ignore[arg-type]
                                       **completion_prompt(body.get("prompt")))
    stream = fields.boolean("stream", False)
    include_usage = fields.nested("stream_options").boolean("include_usage", False)
    n = fields.integer("n", 1, MAX_N, 1)
    return OpenAIRequest(generation, n, stream, include_usage, chat, top_logprobs is not None)  # type: ignore[arg-type]


def completion_prompt(prompt: Any) -> dict[str, Any]:
    """``prompt``: a string, a list of token ids, or a one-element list of either."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return {"prompt": prompt}
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        return {"prompt_ids": tuple(prompt)}
    raise bad_request("'prompt' must be a non-empty string or list of token ids (one prompt per request)",
                      "prompt")


def choice_seed(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index`` of ``n``: its own seed (derived from the request's when given)."""
    if index == 0:
        return params
    return replace(params, seed=None if params.seed is None else params.seed + index)


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [
        {**entry(i.token, i.logprob), "top_logprobs": [entry(t, lp) for t, lp in i.top]}
        for i in items
    ], "refusal": None}


def completion_logprobs(items: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets, position = [], offset
    for item in items:
        offsets.append(position)
        position += len(item.token)
    return {
        "tokens": [i.token for i in items],
        "token_logprobs": [i.logprob for i in items],
        "top_logprobs": [dict(i.top) for i in items],
        "text_offset": offsets,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def openai_blueprint(service: GenerationService, default_max_tokens: int) -> Blueprint:
    bp = Blueprint("openai", __name__)

    def model_card(spec_id: str) -> dict[str, Any]:
        return {"id": spec_id, "object": "model", "created": 0, "owned_by": "openhydra"}

    @bp.get("/v1/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [model_card(s.id) for s in service.catalog.models]}

    @bp.get("/v1/models/<path:name>")
    async def get_model(name: str) -> Any:
        return model_card(service.spec(name).id)

    @bp.post("/v1/chat/completions")
    async def chat_completions() -> Any:
        return await respond(parse(await json_body(), True, default_max_tokens))

    @bp.post("/v1/completions")
    async def completions() -> Any:
        return await respond(parse(await json_body(), False, default_max_tokens))

    async def respond(req: OpenAIRequest) -> Any:
        resolved = await service.resolve(req.generation.model)
        base = service.with_model(req.generation, resolved)
        kind = "chatcmpl" if req.chat else "cmpl"
        meta = {"id": f"{kind}-{secrets.token_hex(12)}", "created": int(time.time()),
                "model": resolved.spec.id, "system_fingerprint": None}
        choices = [replace(base, params=choice_seed(base.params, i)) for i in range(req.n)]
        if req.stream:
            events = await service.start(choices[0])
            body = stream_body(req, meta, choices, events)
            return Response(body, headers={**resolved.headers(), "Cache-Control": "no-cache"},
                            content_type="text/event-stream")
        return await whole_response(req, meta, choices, resolved)

    async def whole_response(req: OpenAIRequest, meta: dict[str, Any], choices: list[GenerationRequest],
                             resolved: Resolved) -> Any:
        results: list[Completion] = []
        logprobs: list[list[TokenLogprob]] = []
        for choice in choices:
            collected: list[TokenLogprob] = []
            async with aclosing(await service.start(choice)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        collected.extend(event.logprobs)
                    else:
                        results.append(event)
            logprobs.append(collected)
        out = []
        for index, (done, lp) in enumerate(zip(results, logprobs)):
            if req.chat:
                out.append({"index": index, "message": {"role": "assistant", "content": done.text, "refusal": None},
                            "logprobs": chat_logprobs(lp) if req.logprobs else None,
                            "finish_reason": done.finish_reason})
            else:
                out.append({"index": index, "text": done.text,
                            "logprobs": completion_logprobs(lp, 0) if req.logprobs else None,
                            "finish_reason": done.finish_reason})
        body = {**meta, "object": "chat.completion" if req.chat else "text_completion", "choices": out,
                "usage": usage(results[0].prompt_tokens, sum(r.completion_tokens for r in results))}
        return body, 200, resolved.headers()

    async def stream_body(req: OpenAIRequest, meta: dict[str, Any], choices: list[GenerationRequest],
                          events: AsyncGenerator[Delta | Completion, None]) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if req.chat else "text_completion"
        extra = {"usage": None} if req.include_usage else {}

        def chunk(index: int, payload: dict[str, Any], finish: str | None = None,
                  logprobs: Any = None) -> bytes:
            choice = ({"index": index, "delta": payload} if req.chat
                      else {"index": index, "text": payload.get("content", "")})
            choice.update(logprobs=logprobs, finish_reason=finish)
            return sse({**meta, "object": obj, "choices": [choice], **extra})

        prompt_tokens, completion_tokens = 0, 0
        try:
            for index, choice in enumerate(choices):
                if index:
                    await events.aclose()
                    events = await service.start(choice)
                if req.chat:
                    yield chunk(index, {"role": "assistant", "content": ""})
                offset = 0
                async for event in events:
                    if isinstance(event, Completion):
                        prompt_tokens = event.prompt_tokens
                        completion_tokens += event.completion_tokens
                        yield chunk(index, {}, event.finish_reason)
                    elif event.text or event.logprobs:
                        lp = None
                        if req.logprobs:
                            lp = chat_logprobs(event.logprobs) if req.chat else completion_logprobs(event.logprobs, offset)
                        offset += len(event.text)
                        yield chunk(index, {"content": event.text}, None, lp)
            if req.include_usage:
                yield sse({**meta, "object": obj, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})
            yield b"data: [DONE]\n\n"
        except APIError as exc:
            yield sse(openai_body(exc))
        finally:
            await events.aclose()

    return bp

