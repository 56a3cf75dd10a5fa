"""Ollama-compatible endpoints: ``/api/generate``, ``/api/chat`` (NDJSON streaming by default),
``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/version``. Durations are nanoseconds and
counts are real token counts."""

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint, Response

from hydra.api.errors import APIError, bad_request, ollama_body
from hydra.api.fields import Fields
from hydra.api.openai import json_body
from hydra.api.service import GenerationService
from hydra.coordinator.generation import Completion, Delta, GenerationRequest
from hydra.coordinator.sampling import SamplingParams
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
        max_tokens=default_max_tokens if predict is None or predict < 1 else predict,
        temperature=opts.number("temperature", 0.0, 2.0, 0.8),  # type: ignore[arg-type]
        top_p=max(1e-6, opts.number("top_p", 0.0, 1.0, 0.9) or 0.0),
        top_k=opts.integer("top_k", 0, 1 << 20, 40),  # type: ignore[arg-type]
        seed=opts.integer("seed", -(1 << 63), (1 << 63) - 1),
        repetition_penalty=opts.number("repeat_penalty", 0.01, 10.0, 1.0),  # type: ignore[arg-type]
        stop=opts.stops("stop"),
    )


def details(spec: ModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "safetensors",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": f"{spec.parameters / 1e9:.1f}B" if spec.parameters >= 1e9 else f"{spec.parameters / 1e6:.0f}M",
        "quantization_level": spec.recommended_quantization.upper() if spec.recommended_quantization != "none" else "F32",
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


def ollama_blueprint(
    service: GenerationService, default_max_tokens: int, loaded: Callable[[], list[ModelSpec]]
) -> Blueprint:
    bp = Blueprint("ollama", __name__)

    @bp.get("/api/version")
    async def version() -> Any:
        return {"version": OLLAMA_API_VERSION}

    @bp.get("/api/tags")
    async def tags() -> Any:
        return {"models": [tag(spec) for spec in service.catalog.models]}

    @bp.get("/api/ps")
    async def ps() -> Any:
        return {"models": [
            {**tag(spec), "expires_at": "2999-01-01T00:00:00Z", "size_vram": 0} for spec in loaded()
        ]}

    @bp.post("/api/show")
    async def show() -> Any:
        body = Fields(await json_body())
        name = body.string("model", max_length=256) or body.string("name", max_length=256)
        if not name:
            raise bad_request("missing required parameter 'model'", "model")
        spec = service.spec(name)
        parameters = f"num_ctx {spec.context_length}\ntemperature 0.8\ntop_p 0.9\ntop_k 40"
        template = "{{ .Prompt }}"
        return {
            "modelfile": f"FROM {spec.id}\nPARAMETER " + parameters.replace("\n", "\nPARAMETER "),
            "parameters": parameters,
            "template": template,
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

    @bp.post("/api/generate")
    async def generate() -> Any:
        body = Fields(await json_body())
        model = body.string("model", required=True, max_length=256)
        prompt = body.string("prompt", default="")
        system = body.string("system")
        stream = body.boolean("stream", True)
        params = options(body, default_max_tokens)
        resolved = await service.resolve(model)  # type: ignore[arg-type]
        if not prompt:  # Ollama's way to load a model: answer at once, done_reason "load"
            return {"model": resolved.spec.id, "created_at": now_iso(), "response": "",
                    "done": True, "done_reason": "load"}, 200, resolved.headers()
        if body.boolean("raw", False) or system is None:
            request = GenerationRequest(resolved.spec.id, prompt=prompt, params=params)
        else:
            request = GenerationRequest(
                resolved.spec.id,
                messages=({"role": "system", "content": system}, {"role": "user", "content": prompt}),
                params=params,
            )
        return await respond(request, stream, resolved.headers(), chat=False)

    @bp.post("/api/chat")
    async def chat() -> Any:
        body = Fields(await json_body())
        model = body.string("model", required=True, max_length=256)
        messages = body.messages()
        stream = body.boolean("stream", True)
        params = options(body, default_max_tokens)
        resolved = await service.resolve(model)  # type: ignore[arg-type]
        request = GenerationRequest(resolved.spec.id, messages=messages, params=params)
        return await respond(request, stream, resolved.headers(), chat=True)

    def piece(request: GenerationRequest, text: str, chat: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": request.model, "created_at": now_iso()}
        if chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        return out

    def final(request: GenerationRequest, done: Completion, started: float, chat: bool, text: str) -> dict[str, Any]:
        prompt_ns = int(done.ttft_s * 1e9)
        return {
            **piece(request, text, chat),
            "done": True,
            "done_reason": done.finish_reason,
            "total_duration": int((time.perf_counter() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": done.prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": done.completion_tokens,
            "eval_duration": max(1, int((done.duration_s - done.ttft_s) * 1e9)),
            **({} if chat else {"context": []}),
        }

    async def respond(request: GenerationRequest, stream: bool, headers: dict[str, str], chat: bool) -> Any:
        started = time.perf_counter()
        events = await service.start(request)
        if stream:
            return Response(ndjson(request, events, started, chat), headers=headers,
                            content_type="application/x-ndjson")
        async with aclosing(events):
            async for event in events:
                if isinstance(event, Completion):
                    return final(request, event, started, chat, event.text), 200, headers
        raise AssertionError("generation ended without a completion")

    async def ndjson(request: GenerationRequest, events: AsyncGenerator[Delta | Completion, None],
                     started: float, chat: bool) -> AsyncIterator[bytes]:
        try:
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, Completion):
                        yield line(final(request, event, started, chat, ""))
                    elif event.text:
                        yield line({**piece(request, event.text, chat), "done": False})
        except APIError as exc:
            yield line(ollama_body(exc))

    return bp


def line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()
