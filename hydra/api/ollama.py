"""Ollama-compatible endpoints: ``/api/generate``, ``/api/chat`` (NDJSON streaming by default),
``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/version``. Durations are nanoseconds and
counts are real token counts."""

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint, Response

from hydra.api.bodies import json_body
from hydra.api.errors import APIError, bad_request, ollama_body
from hydra.api.fields import Fields, compaction
from hydra.api.service import Events, GenerationService, Resolved
from hydra.coordinator.generation import Completion, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.models.catalog import ModelSpec

OLLAMA_API_VERSION = "0.6.3"  # the Ollama API level these endpoints follow
MAX_PREDICT = 32768


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def options(body: Fields, default_max_tokens: int) -> SamplingParams:
    opts = body.nested("options")
    predict = opts.integer("num_predict", -2, MAX_PREDICT, default_max_tokens)
    opts.integer("num_ctx", 1, 1 << 20)  # accepted: the context is the model's own
    return SamplingParams(
        max_tokens=default_max_tokens if predict < 1 else predict,
        temperature=opts.number("temperature", 0.0, 2.0, 0.8),
        top_p=max(1e-6, opts.number("top_p", 0.0, 1.0, 0.9)),
        top_k=opts.integer("top_k", 0, 1 << 20, 40),
        seed=opts.integer("seed", -(1 << 63), (1 << 63) - 1),
        repetition_penalty=opts.number("repeat_penalty", 0.01, 10.0, 1.0),
        stop=opts.stops("stop"),
    )


def details(spec: ModelSpec) -> dict[str, Any]:
    billions = spec.parameters >= 1e9
    size = f"{spec.parameters / 1e9:.1f}B" if billions else f"{spec.parameters / 1e6:.0f}M"
    quantization = spec.recommended_quantization
    return {
        "parent_model": "",
        "format": "safetensors",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": size,
        "quantization_level": "F32" if quantization == "none" else quantization.upper(),
    }


def tag(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.id,
        "model": spec.id,
        "modified_at": "1970-01-01T00:00:00Z",
        "size": int(spec.memory_per_shard_gb * spec.peers_needed * 2**30),
        "digest": spec.id.encode().hex()[:64].ljust(64, "0"),
        "details": details(spec),
    }


TEMPLATE_VARIABLE = re.compile(r"\{\{-?\s*(\.\w+)\s*-?\}\}")
TEMPLATE_ACTION = re.compile(r"\{\{.*?\}\}", re.S)


def generate_request(body: Fields, default_max_tokens: int, model: str) -> GenerationRequest | None:
    """What ``/api/generate`` asks for, with Ollama's template semantics: ``raw`` sends the
    prompt as it is; a request ``template`` is filled in and sent as it is; otherwise the
    model's chat template wraps ``system`` and ``prompt`` (a model without one gets them as
    plain text, as Ollama's default ``{{ .Prompt }}`` template would). None for Ollama's
    load-only request (no prompt)."""
    prompt = body.string("prompt", default="")
    system = body.string("system")
    template = body.string("template")
    params = options(body, default_max_tokens)
    cache = compaction(body.nested("options"))
    if not prompt:
        return None
    if body.boolean("raw", False):
        return GenerationRequest(model, prompt=prompt, params=params, **cache)
    if template:
        filled = fill_template(template, prompt, system)
        return GenerationRequest(model, prompt=filled, params=params, **cache)
    turns = ({"role": "system", "content": system},) if system else ()
    turns += ({"role": "user", "content": prompt},)
    return GenerationRequest(model, messages=turns, params=params, plain_without_template=True, **cache)


def fill_template(template: str, prompt: str, system: str | None) -> str:
    """An Ollama (Go) template with ``{{ .System }}``, ``{{ .Prompt }}`` and ``{{ .Response }}``
    filled in; other template actions (conditions, loops) are refused with a 400."""
    values = {".System": system or "", ".Prompt": prompt, ".Response": ""}
    filled = TEMPLATE_VARIABLE.sub(lambda m: values.get(m[1], m[0]), template)
    unsupported = TEMPLATE_ACTION.search(filled)
    if unsupported:
        raise bad_request(
            f"template action {unsupported[0][:40]!r} is not supported: only "
            "{{ .System }}, {{ .Prompt }} and {{ .Response }}", "template")
    return filled


def piece(model: str, text: str, chat: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if chat:
        out["message"] = {"role": "assistant", "content": text}
    else:
        out["response"] = text
    return out


def final(model: str, done: Completion, started: float, chat: bool, text: str,
          degradation: str | None = None) -> dict[str, Any]:
    """The last object of a reply; ``degradation_reason`` when a smaller model answered."""
    return {
        **({"degradation_reason": degradation} if degradation else {}),
        **piece(model, text, chat),
        "done": True,
        "done_reason": done.finish_reason,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": done.prompt_tokens,
        "prompt_eval_duration": int(done.ttft_s * 1e9),
        "eval_count": done.completion_tokens,
        "eval_duration": max(1, int((done.duration_s - done.ttft_s) * 1e9)),
        **({} if chat else {"context": []}),
    }


def line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()


async def ndjson(model: str, events: Events, started: float, chat: bool,
                 degradation: str | None) -> AsyncIterator[bytes]:
    try:
        async with aclosing(events):
            async for event in events:
                if isinstance(event, Completion):
                    yield line(final(model, event, started, chat, "", degradation))
                elif event.text:
                    yield line({**piece(model, event.text, chat), "done": False})
    except APIError as exc:  # after the stream began: the error ends it (done, so clients stop)
        yield line({**ollama_body(exc), "done": True, "done_reason": "error"})


def show_body(spec: ModelSpec) -> dict[str, Any]:
    parameters = f"num_ctx {spec.context_length}\ntemperature 0.8\ntop_p 0.9\ntop_k 40"
    return {
        "modelfile": f"FROM {spec.id}\nPARAMETER " + parameters.replace("\n", "\nPARAMETER "),
        "parameters": parameters,
        "template": "{{ .Prompt }}",
        "details": details(spec),
        "model_info": {
            "general.architecture": spec.architecture,
            "general.parameter_count": spec.parameters,
            "general.block_count": spec.num_layers,
            "openhydra.hub_id": spec.hub_id,
            "openhydra.peers_needed": spec.peers_needed,
        },
        "capabilities": ["completion"],
        "modified_at": "1970-01-01T00:00:00Z",
    }


class OllamaEndpoints:
    def __init__(self, service: GenerationService, default_max_tokens: int,
                 loaded: Callable[[], list[ModelSpec]]) -> None:
        self.service = service
        self.default_max_tokens = default_max_tokens
        self.loaded = loaded  # the models this node holds now (``/api/ps``)

    async def version(self) -> Any:
        return {"version": OLLAMA_API_VERSION}

    async def tags(self) -> Any:
        """Every catalog model, those with a route now first, each saying whether it has one."""
        routable = await self.service.coordinator.routable()
        specs = sorted(self.service.catalog.models, key=lambda s: s.id not in routable)
        return {"models": [{**tag(spec), "routable": spec.id in routable} for spec in specs]}

    async def ps(self) -> Any:
        return {"models": [
            {**tag(spec), "expires_at": "2999-01-01T00:00:00Z", "size_vram": 0} for spec in self.loaded()
        ]}

    async def show(self) -> Any:
        body = Fields(await json_body())
        name = body.string("model", max_length=256) or body.string("name", max_length=256)
        if not name:
            raise bad_request("missing required parameter 'model'", "model")
        return show_body(self.service.spec(name))

    async def generate(self) -> Any:
        body = Fields(await json_body())
        model = body.string("model", required=True, max_length=256)
        stream = body.boolean("stream", True)
        request = generate_request(body, self.default_max_tokens, model)
        resolved = await self.service.resolve(model)
        if request is None:  # Ollama's way to load a model: answer at once, done_reason "load"
            return {"model": resolved.spec.id, "created_at": now_iso(), "response": "",
                    "done": True, "done_reason": "load"}, 200, resolved.headers()
        return await self.respond(self.service.with_model(request, resolved), resolved, stream, chat=False)

    async def chat(self) -> Any:
        body = Fields(await json_body())
        model = body.string("model", required=True, max_length=256)
        messages = body.messages()
        stream = body.boolean("stream", True)
        params = options(body, self.default_max_tokens)
        resolved = await self.service.resolve(model)
        cache = compaction(body.nested("options"))
        request = GenerationRequest(resolved.spec.id, messages=messages, params=params, **cache)
        return await self.respond(request, resolved, stream, chat=True)

    async def respond(self, request: GenerationRequest, resolved: Resolved, stream: bool, chat: bool) -> Any:
        started = time.perf_counter()
        events = await self.service.start(request, resolved.route)
        headers = resolved.headers()
        if stream:
            body = ndjson(request.model, events, started, chat, resolved.degradation)
            return Response(body, headers=headers, content_type="application/x-ndjson")
        async with aclosing(events):
            async for event in events:
                if isinstance(event, Completion):
                    answer = final(request.model, event, started, chat, event.text, resolved.degradation)
                    return answer, 200, headers
        raise AssertionError("generation ended without a completion")


def ollama_blueprint(
    service: GenerationService, default_max_tokens: int, loaded: Callable[[], list[ModelSpec]]
) -> Blueprint:
    endpoints = OllamaEndpoints(service, default_max_tokens, loaded)
    bp = Blueprint("ollama", __name__)
    bp.add_url_rule("/api/version", view_func=endpoints.version, methods=["GET"])
    bp.add_url_rule("/api/tags", view_func=endpoints.tags, methods=["GET"])
    bp.add_url_rule("/api/ps", view_func=endpoints.ps, methods=["GET"])
    bp.add_url_rule("/api/show", view_func=endpoints.show, methods=["POST"])
    bp.add_url_rule("/api/generate", view_func=endpoints.generate, methods=["POST"])
    bp.add_url_rule("/api/chat", view_func=endpoints.chat, methods=["POST"])
    return bp
