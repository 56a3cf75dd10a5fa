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
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from quart import Blueprint, Response

from hydra.api.bodies import json_body
from hydra.api.errors import APIError, bad_request, openai_body
from hydra.api.fields import Fields, compaction
from hydra.api.service import Events, GenerationService, Resolved
from hydra.coordinator.generation import Completion, GenerationRequest, TokenLogprob
from hydra.coordinator.params import SamplingParams

MAX_TOKENS_LIMIT = 32768
MAX_N = 8
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class OpenAIRequest:
    generation: GenerationRequest
    n: int
    stream: bool
    include_usage: bool
    chat: bool
    logprobs: bool


# --- request parsing (pure: unit-tested without a server) -----------------------------------


def sampling(fields: Fields, default_max_tokens: int) -> SamplingParams:
    max_tokens = fields.integer("max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = fields.integer("max_tokens", 1, MAX_TOKENS_LIMIT, default_max_tokens)
    for ignored in ("presence_penalty", "frequency_penalty"):
        fields.number(ignored, -2.0, 2.0)
    top_p = fields.number("top_p", 0.0, 1.0, 1.0)
    if top_p == 0:
        raise bad_request("'top_p' must be above 0", "top_p")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=fields.number("temperature", 0.0, 2.0, 1.0),
        top_p=top_p,
        top_k=fields.integer("top_k", 0, 1 << 20, 0),
        seed=fields.integer("seed", -(1 << 63), (1 << 63) - 1),
        repetition_penalty=fields.number("repetition_penalty", 0.01, 10.0, 1.0),
        stop=fields.stops("stop"),
    )


def top_logprobs(fields: Fields, chat: bool) -> int | None:
    """How many alternatives to report per token; None: no logprobs at all."""
    if chat:  # chat: logprobs is a flag, top_logprobs a count
        wanted = fields.boolean("logprobs", False)
        top = fields.integer("top_logprobs", 0, 20, 0)
        return top if wanted else None
    return fields.integer("logprobs", 0, 5)  # completions: the count itself


def priority(fields: Fields) -> bool:
    """``service_tier``: "priority" burns HYDRA so that full stages admit the request first;
    "auto", "default" and "flex" are ordinary requests."""
    tier = fields.string("service_tier", default="auto", max_length=16)
    if tier not in ("auto", "default", "flex", "priority"):
        raise bad_request("'service_tier' must be auto, default, flex or priority", "service_tier")
    return tier == "priority"


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


def parse(body: Any, chat: bool, default_max_tokens: int) -> OpenAIRequest:
    fields = Fields(body)
    model = fields.string("model", required=True, max_length=256)
    params = sampling(fields, default_max_tokens)
    top = top_logprobs(fields, chat)
    common = {"params": params, "top_logprobs": top, "priority": priority(fields), **compaction(fields)}
    if chat:
        generation = GenerationRequest(model, messages=fields.messages(), **common)
    else:
        generation = GenerationRequest(model, **completion_prompt(body.get("prompt")), **common)
    stream = fields.boolean("stream", False)
    include_usage = fields.nested("stream_options").boolean("include_usage", False)
    n = fields.integer("n", 1, MAX_N, 1)
    return OpenAIRequest(generation, n, stream, include_usage, chat, top is not None)


def choice_seed(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index`` of ``n``: its own seed (derived from the request's when given)."""
    if index == 0:
        return params
    return replace(params, seed=None if params.seed is None else params.seed + index)


# --- response shapes ----------------------------------------------------------------------


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


def whole_choice(
    req: OpenAIRequest, index: int, done: Completion, logprobs: list[TokenLogprob]
) -> dict[str, Any]:
    if req.chat:
        return {"index": index, "message": {"role": "assistant", "content": done.text, "refusal": None},
                "logprobs": chat_logprobs(logprobs) if req.logprobs else None,
                "finish_reason": done.finish_reason}
    return {"index": index, "text": done.text,
            "logprobs": completion_logprobs(logprobs, 0) if req.logprobs else None,
            "finish_reason": done.finish_reason}


class ChunkWriter:
    """The SSE chunks of one streamed response (all choices, one ``id``)."""

    def __init__(self, req: OpenAIRequest, meta: dict[str, Any]) -> None:
        self.req = req
        self.meta = meta
        self.object = "chat.completion.chunk" if req.chat else "text_completion"
        self.extra = {"usage": None} if req.include_usage else {}

    def chunk(self, index: int, content: str | None, finish: str | None = None,
              logprobs: Any = None, role: bool = False) -> bytes:
        if self.req.chat:
            delta = {"role": "assistant", "content": ""} if role else (
                {} if content is None else {"content": content})
            choice: dict[str, Any] = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": content or ""}
        choice.update(logprobs=logprobs, finish_reason=finish)
        return sse({**self.meta, "object": self.object, "choices": [choice], **self.extra})

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return sse({**self.meta, "object": self.object, "choices": [],
                    "usage": usage(prompt_tokens, completion_tokens)})

    def logprobs(self, items: list[TokenLogprob], offset: int) -> Any:
        if not self.req.logprobs:
            return None
        return chat_logprobs(items) if self.req.chat else completion_logprobs(items, offset)


# --- endpoints ------------------------------------------------------------------------------


class OpenAIEndpoints:
    def __init__(self, service: GenerationService, default_max_tokens: int) -> None:
        self.service = service
        self.default_max_tokens = default_max_tokens

    @staticmethod
    def model_card(spec_id: str, routable: bool) -> dict[str, Any]:
        """OpenAI's model object; ``routable``: a complete route serves it now."""
        return {"id": spec_id, "object": "model", "created": 0, "owned_by": "openhydra",
                "routable": routable}

    async def list_models(self) -> Any:
        """Every catalog model, those with a route now first."""
        routable = await self.service.coordinator.routable()
        specs = sorted(self.service.catalog.models, key=lambda s: s.id not in routable)
        return {"object": "list", "data": [self.model_card(s.id, s.id in routable) for s in specs]}

    async def get_model(self, name: str) -> Any:
        spec = self.service.spec(name)
        return self.model_card(spec.id, spec.id in await self.service.coordinator.routable())

    async def chat_completions(self) -> Any:
        return await self.respond(parse(await json_body(), True, self.default_max_tokens))

    async def completions(self) -> Any:
        return await self.respond(parse(await json_body(), False, self.default_max_tokens))

    async def respond(self, req: OpenAIRequest) -> Any:
        resolved = await self.service.resolve(req.generation.model)
        base = self.service.with_model(req.generation, resolved)
        kind = "chatcmpl" if req.chat else "cmpl"
        meta = {"id": f"{kind}-{secrets.token_hex(12)}", "created": int(time.time()),
                "model": resolved.spec.id, "system_fingerprint": None}
        choices = [replace(base, params=choice_seed(base.params, i)) for i in range(req.n)]
        if req.stream:
            events = await self.service.start(choices[0], resolved.route)
            body = self.stream_body(ChunkWriter(req, meta), choices, events)
            return Response(body, headers={**resolved.headers(), "Cache-Control": "no-cache"},
                            content_type="text/event-stream")
        return await self.whole_response(req, meta, choices, resolved)

    async def whole_response(self, req: OpenAIRequest, meta: dict[str, Any],
                             choices: list[GenerationRequest], resolved: Resolved) -> Any:
        out, prompt_tokens, completion_tokens = [], 0, 0
        for index, choice in enumerate(choices):
            route = resolved.route if index == 0 else None  # later choices plan their own
            done, logprobs = await self.collect(await self.service.start(choice, route))
            out.append(whole_choice(req, index, done, logprobs))
            prompt_tokens, completion_tokens = done.prompt_tokens, completion_tokens + done.completion_tokens
        body = {**meta, "object": "chat.completion" if req.chat else "text_completion", "choices": out,
                "usage": usage(prompt_tokens, completion_tokens)}
        return body, 200, resolved.headers()

    @staticmethod
    async def collect(events: Events) -> tuple[Completion, list[TokenLogprob]]:
        logprobs: list[TokenLogprob] = []
        async with aclosing(events):
            async for event in events:
                if isinstance(event, Completion):
                    return event, logprobs
                logprobs.extend(event.logprobs)
        raise AssertionError("generation ended without a completion")

    async def stream_body(self, out: ChunkWriter, choices: list[GenerationRequest],
                          events: Events) -> AsyncIterator[bytes]:
        prompt_tokens, completion_tokens = 0, 0
        try:
            for index, choice in enumerate(choices):
                if index:
                    await events.aclose()
                    events = await self.service.start(choice)
                async for item in self.choice_chunks(out, index, events):
                    if isinstance(item, Completion):
                        prompt_tokens = item.prompt_tokens
                        completion_tokens += item.completion_tokens
                    else:
                        yield item
            if out.req.include_usage:
                yield out.usage(prompt_tokens, completion_tokens)
            yield DONE
        except APIError as exc:  # after the stream began: an error event, then the terminator
            yield sse(openai_body(exc))
            yield DONE
        finally:
            await events.aclose()

    @staticmethod
    async def choice_chunks(
        out: ChunkWriter, index: int, events: Events
    ) -> AsyncIterator[bytes | Completion]:
        """One choice's chunks, then its ``Completion`` (for the usage count)."""
        if out.req.chat:
            yield out.chunk(index, None, role=True)
        offset = 0
        async for event in events:
            if isinstance(event, Completion):
                yield out.chunk(index, None, event.finish_reason)
                yield event
            elif event.text or event.logprobs:
                yield out.chunk(index, event.text, None, out.logprobs(event.logprobs, offset))
                offset += len(event.text)


def openai_blueprint(service: GenerationService, default_max_tokens: int) -> Blueprint:
    endpoints = OpenAIEndpoints(service, default_max_tokens)
    bp = Blueprint("openai", __name__)
    bp.add_url_rule("/v1/models", view_func=endpoints.list_models, methods=["GET"])
    bp.add_url_rule("/v1/models/<path:name>", view_func=endpoints.get_model, methods=["GET"])
    bp.add_url_rule("/v1/chat/completions", view_func=endpoints.chat_completions, methods=["POST"])
    bp.add_url_rule("/v1/completions", view_func=endpoints.completions, methods=["POST"])
    return bp
