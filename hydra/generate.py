"""``hydra generate``: a one-shot coordinator. It joins the swarm with a throwaway identity,
waits for a route covering the model, streams one generation to stdout and leaves. With no
``--bootstrap`` it runs the whole model in this process (no network needed)."""

import sys
from collections.abc import Callable

import trio

from hydra.config import GenerateConfig
from hydra.coordinator.generation import Completion, Coordinator, Delta, GenerationRequest
from hydra.coordinator.routing import NoRoute
from hydra.dht.service import open_dht_peer
from hydra.models.catalog import load_catalog
from hydra.runtime.compiled import should_compile
from hydra.runtime.compute import run_compute
from hydra.runtime.device import resolve_device
from hydra.runtime.quantize import resolve_quantization
from hydra.runtime.shard import load_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.runtime.wire import WIRE_DTYPES
from hydra.stage.limits import StageLimits
from hydra.stage.server import StageServer
from hydra.verification.config import VerificationConfig


def generation_request(config: GenerateConfig, model: str) -> GenerationRequest:
    if config.chat:
        turn = {"role": "user", "content": config.prompt}
        return GenerationRequest(model, messages=(turn,), params=config.sampling)
    return GenerationRequest(model, prompt=config.prompt, params=config.sampling)


async def run_generate(
    config: GenerateConfig, write: Callable[[str], None] = sys.stdout.write
) -> Completion:
    catalog = load_catalog()
    spec = catalog.resolve(config.model or catalog.default)
    dtype, device = WIRE_DTYPES[config.dtype], resolve_device(config.device)
    compiling = should_compile(config.compile, device)
    quantization = resolve_quantization(config.quantization, device, spec.recommended_quantization)
    async with open_dht_peer(None, "127.0.0.1", 0, config.discovery) as peer:
        local = None
        first = config.privacy.local_layers
        if not config.discovery.bootstrap:  # standalone: serve every other block ourselves
            path = await run_compute(resolve_checkpoint, spec, config.model_path)
            blocks = await run_compute(
                load_stage, path, first, spec.num_layers, dtype, device, quantization, compiling
            )
            local = StageServer(None, spec.id, blocks, StageLimits(), peer.keypair)
        coordinator = Coordinator(
            peer.host, peer.dht, catalog, local=local, dtype=dtype, device=device,
            privacy=config.privacy, quantization=quantization, compile=compiling,
            draft_tokens=config.draft_tokens,
            wire_dtype=config.wire_dtype,
            compaction=config.compaction,
            checkpoints={spec.id: config.model_path} if config.model_path else None,
            # one generation, then gone: no reputation to keep, so no audits (commitments and
            # the chain check still guard the answer)
            verification=VerificationConfig(verify_rate=0.0),
        )
        await wait_for_route(coordinator, spec.id, config.wait)
        events = coordinator.stream(generation_request(config, spec.id))
        try:
            async for event in events:
                if isinstance(event, Delta):
                    write(event.text)
                    sys.stdout.flush()
                else:
                    write("\n")
                    return event
        finally:
            await events.aclose()
    raise AssertionError("generation ended without a completion")


async def wait_for_route(coordinator: Coordinator, model: str, wait: float) -> None:
    with trio.move_on_after(wait):
        while not await coordinator.route_available(model):
            await trio.sleep(0.5)
        return
    raise NoRoute(f"no peers cover the blocks of {model} after {wait:.0f}s")
