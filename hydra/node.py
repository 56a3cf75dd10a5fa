"""``hydra run``: one trio nursery holding the DHT peer, the stage serving this node's blocks,
the announce loop, the coordinator and the HTTP API."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import trio

import hydra
from hydra.api.app import create_app, generation_service
from hydra.api.server import serve_http
from hydra.config import NodeConfig
from hydra.coordinator.generation import Coordinator
from hydra.coordinator.routing import candidates_for, coverage
from hydra.dht.announcer import Announcer
from hydra.dht.keyspace import model_key
from hydra.dht.service import DhtPeer, open_dht_peer
from hydra.dht.work import solve
from hydra.economy.ledger import LEDGER_FILE, Ledger
from hydra.economy.service import TokenService
from hydra.errors import ConfigError
from hydra.hardware.detect import Hardware, detect
from hydra.models.catalog import ModelSpec, load_catalog
from hydra.p2p.host import ensure_port_free
from hydra.runtime.compiled import should_compile
from hydra.runtime.compute import run_compute
from hydra.runtime.quantize import resolve_quantization
from hydra.runtime.shard import load_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.runtime.wire import WIRE_DTYPES
from hydra.stage.limits import StageLimits
from hydra.stage.placement import blocks_that_fit, least_covered_window
from hydra.stage.server import StageServer
from hydra.verification.reputation import REPUTATION_FILE, Reputation
from protocols.records import PeerRecord

log = logging.getLogger(__name__)


async def choose_layers(
    peer: DhtPeer, config: NodeConfig, spec: ModelSpec, hardware: Hardware
) -> tuple[int, int]:
    """``--layers`` if given; else the whole model if it fits, else the least-covered blocks."""
    if config.layers is not None:
        start, end = config.layers
        if end > spec.num_layers:
            raise ConfigError(f"{spec.id} has {spec.num_layers} layers; cannot serve {start}:{end}")
        return start, end
    size = blocks_that_fit(spec, hardware.memory_for_weights_gb(str(config.torch_device())))
    if size == spec.num_layers:
        return 0, spec.num_layers
    entries = await peer.dht.get(model_key(spec.id))
    served = candidates_for((e.record for e in entries), spec.id, spec.num_layers)
    return least_covered_window(coverage(served, spec.num_layers), size)


async def start_stage(
    peer: DhtPeer,
    spec: ModelSpec,
    checkpoint: Path,
    layers: tuple[int, int],
    dtype: torch.dtype,
    device: torch.device,
    limits: StageLimits,
    ledger: Ledger | None = None,
    quantization: str = "none",
    compile: bool = False,
) -> tuple[StageServer, Announcer, float]:
    """Load blocks ``layers`` off the event loop, serve them on ``peer``'s host, measure their
    throughput (compiling the decode step first if ``compile``); returns the stage, an
    announcer describing it, and the throughput."""
    start, end = layers
    compiling = ", compiling the decode step (tens of seconds)" if compile else ""
    log.info("loading %s blocks %d:%d (%s on %s%s)", spec.id, start, end, dtype, device, compiling)
    blocks = await run_compute(load_stage, checkpoint, start, end, dtype, device, quantization, compile)
    stage = StageServer(peer.host, spec.id, blocks, limits, peer.keypair, ledger)
    stage.attach(peer.host)
    throughput = await run_compute(blocks.measure_throughput)
    log.info("serving %d blocks at %.1f tokens/s", end - start, throughput)
    discovery = peer.discovery
    work = await trio.to_thread.run_sync(solve, peer.peer_id, discovery.region, discovery.work_bits)
    announcer = Announcer(
        peer.dht,
        peer.keypair,
        lambda: describe(peer, spec, stage, throughput, work),
        discovery.announce_interval,
        discovery.record_ttl,
    )
    return stage, announcer, throughput


def describe(
    peer: DhtPeer, spec: ModelSpec, stage: StageServer, throughput: float, work_nonce: int
) -> PeerRecord:
    """What this peer serves now; the announcer stamps time, expiry and sequence number."""
    return PeerRecord(
        peer_id=peer.peer_id,
        seq=0,
        issued_at=0.0,
        expires_at=0.0,
        addrs=peer.dht.own_addrs(),
        version=hydra.__version__,
        model=spec.id,
        layer_start=stage.blocks.layer_start,
        layer_end=stage.blocks.layer_end,
        total_layers=spec.num_layers,
        dtype=str(stage.blocks.dtype).removeprefix("torch."),
        quantization=stage.blocks.quantization,
        throughput=throughput,
        cache_tokens_free=stage.cache_tokens_free(),
        kx_key=stage.kx.public,
        kx_signature=stage.kx.signature,
        region=peer.discovery.region,
        work_nonce=work_nonce,
        model_hash=stage.blocks.model_hash,
    )


async def run_node(
    config: NodeConfig,
    on_ready: Callable[[dict[str, Any]], None] = lambda status: None,
    stopping: trio.Event | None = None,
) -> None:
    """Run until ``stopping`` is set (then drain live streams and return) or until cancelled.
    ``on_ready`` receives the first status once everything listens."""
    catalog = load_catalog()
    spec = catalog.resolve(config.model or catalog.default)
    ensure_port_free(config.host, config.port, "--port")  # fail before loading anything
    ensure_port_free(config.api_host, config.api_port, "--api-port")
    discovery = config.discovery
    dtype, device = WIRE_DTYPES[config.dtype], config.torch_device()
    compiling = should_compile(config.compile, device)
    quantization = resolve_quantization(config.quantization, device, spec.recommended_quantization)
    hardware = await run_compute(detect)
    log.info("hardware: %s", hardware.describe())
    async with open_dht_peer(config.home, config.host, config.port, discovery) as peer:
        start, end = await choose_layers(peer, config, spec, hardware)
        path = await run_compute(resolve_checkpoint, spec, config.model_path)
        stage, announcer, throughput = await start_stage(
            peer, spec, path, (start, end), dtype, device, config.stage_limits,
            Ledger(config.home / LEDGER_FILE), quantization, compiling,
        )

        def status() -> dict[str, Any]:
            last = announcer.last
            return {
                "role": "node",
                **peer.status(),
                "api": f"http://{config.api_host}:{config.api_port}",
                "hardware": hardware.describe(),
                "model": spec.id,
                "layers": [start, end],
                "total_layers": spec.num_layers,
                "throughput_tokens_s": round(throughput, 1),
                "stage": stage.status(),
                **coordinator.status(),
                "announce": {
                    "interval_s": discovery.announce_interval,
                    "ttl_s": discovery.record_ttl,
                    "last_seq": last.seq if last else None,
                    "stored_on": announcer.last_stored_on,
                },
            }

        tokens = TokenService(peer.host, peer.keypair, config.home, config.token, discovery.bootstrap)
        stage.tokens = tokens
        coordinator = Coordinator(
            peer.host, peer.dht, catalog, local=stage, dtype=dtype, device=device,
            checkpoints={spec.id: path}, privacy=config.privacy, verification=config.verification,
            reputation=Reputation(config.home / REPUTATION_FILE, stake_of=tokens.stake_of),
            tokens=tokens, quantization=quantization, compile=compiling, draft_tokens=config.draft_tokens,
            wire_dtype=config.wire_dtype, compaction=config.compaction,
        )
        gauges = {
            "hydra_stage_sessions": (
                "Open pipeline sessions on this node's stage", lambda: len(stage.sessions)
            ),
            "hydra_active_generations": (
                "Generations this node coordinates now", lambda: len(coordinator.active_pipelines)
            ),
            "hydra_known_peers": ("Peers in the DHT routing table", lambda: len(peer.dht.routing)),
            "hydra_layers_served": ("Transformer blocks this node serves", lambda: end - start),
            "hydra_stage_batch_rows": (
                "Mean rows per forward pass of this node's stage (batched sessions)",
                lambda: stage.batcher.stats.mean_rows,
            ),
            "hydra_prefix_cache_blocks": (
                "Prompt blocks this node's stage keeps for reuse",
                lambda: len(stage.prefixes) if stage.prefixes is not None else 0,
            ),
            "hydra_prefix_cache_reused_blocks": (
                "Prompt blocks restored into sessions instead of recomputed",
                lambda: stage.prefixes.hits if stage.prefixes is not None else 0,
            ),
            "hydra_kv_compactions": (
                "KV cache compactions this node's stage has run (Attention Matching)",
                lambda: stage.compactions,
            ),
            "hydra_barter_credits": (
                "Barter credits: earned serving minus spent consuming, decayed",
                lambda: coordinator.barter_status()["credits"],
            ),
            **tokens.gauges(),
        }
        app = create_app(peer.dht, status, catalog, coordinator, config.api, gauges)
        async with trio.open_nursery() as nursery:
            await nursery.start(coordinator.auditor.run)
            await nursery.start(tokens.run, config.token.mint_every_s)
            await nursery.start(announcer.run)
            await nursery.start(serve_http, app, config.api_host, config.api_port)
            on_ready(status())
            await (trio.Event() if stopping is None else stopping).wait()
            await generation_service(app).drain()
            nursery.cancel_scope.cancel()
