"""``hydra run``: one trio nursery holding the DHT peer, the stage serving this node's blocks,
the announce loop, the coordinator and the HTTP API."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import trio

import hydra
from hydra.api.app import Gauges, create_app, generation_service
from hydra.api.server import serve_http
from hydra.config import NodeConfig
from hydra.coordinator.generation import Coordinator
from hydra.dht.announcer import Announcer
from hydra.dht.service import DhtPeer, open_dht_peer
from hydra.dht.work import solve
from hydra.economy.ledger import LEDGER_FILE, Ledger
from hydra.economy.service import TokenService
from hydra.errors import ConfigError
from hydra.hardware.detect import Hardware, detect
from hydra.models.catalog import Catalog, ModelSpec, load_catalog
from hydra.p2p.host import ensure_port_free
from hydra.promotion import Promoter, coverage_of, uncovered_larger_model
from hydra.runtime.backends import MLX, PYTORCH, load_span
from hydra.runtime.compiled import should_compile
from hydra.runtime.compute import run_compute
from hydra.runtime.quantize import resolve_quantization
from hydra.runtime.sources import resolve_checkpoint
from hydra.runtime.wire import WIRE_DTYPES
from hydra.stage.limits import StageLimits
from hydra.stage.placement import block_gb, blocks_that_fit, least_covered_window
from hydra.stage.prefixes import PrefixStore
from hydra.stage.server import StageServer
from hydra.verification.reputation import REPUTATION_FILE, Reputation
from protocols.records import PeerRecord

log = logging.getLogger(__name__)


async def choose_model(
    peer: DhtPeer, config: NodeConfig, catalog: Catalog, memory_gb: float | None
) -> ModelSpec:
    """``--model`` if given; else the catalog default, or a larger model the swarm lacks
    peers for when this machine can serve it (``hydra.promotion``; not with ``--no-promote``)."""
    spec = catalog.resolve(config.model or catalog.default)
    if not (config.chooses_model and config.promote):
        return spec
    larger = await uncovered_larger_model(peer.dht, catalog, spec, memory_gb)
    if larger is None:
        return spec
    log.info("serving %s rather than %s: the swarm lacks peers for it and this machine can serve it",
             larger.id, spec.id)
    return larger


async def choose_layers(
    peer: DhtPeer, config: NodeConfig, spec: ModelSpec, memory_gb: float | None
) -> tuple[int, int]:
    """``--layers`` if given; else the whole model if it fits, else the least-covered blocks."""
    if config.layers is not None:
        start, end = config.layers
        if end > spec.num_layers:
            raise ConfigError(f"{spec.id} has {spec.num_layers} layers; cannot serve {start}:{end}")
        return start, end
    size = blocks_that_fit(spec, memory_gb)
    if size == spec.num_layers:
        return 0, spec.num_layers
    return least_covered_window(await coverage_of(peer.dht, spec), size)


async def load_blocks(
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
    backend: str = PYTORCH,
) -> tuple[StageServer, float]:
    """Load blocks ``layers`` off the event loop, serve them on ``peer``'s host, measure their
    throughput (compiling the decode step first if ``compile``); returns the stage and its
    throughput."""
    start, end = layers
    compiling = ", compiling the decode step (tens of seconds)" if compile else ""
    log.info("loading %s blocks %d:%d (%s on %s, %s%s)", spec.id, start, end, dtype, device, backend,
             compiling)
    blocks = await run_compute(
        load_span, backend, checkpoint, start, end, dtype, device, quantization, compile
    )
    stage = StageServer(peer.host, spec.id, blocks, limits, peer.keypair, ledger)
    stage.attach(peer.host)
    throughput = await run_compute(blocks.measure_throughput)
    log.info("serving %d blocks at %.1f tokens/s", end - start, throughput)
    return stage, throughput


async def start_stage(
    peer: DhtPeer, spec: ModelSpec, *args: Any, **kwargs: Any
) -> tuple[StageServer, Announcer, float]:
    """``load_blocks`` (the same arguments), and an announcer describing the blocks; returns
    the stage, the announcer and the throughput."""
    stage, throughput = await load_blocks(peer, spec, *args, **kwargs)
    work = await proof_of_work(peer)
    announcer = Announcer(
        peer.dht,
        peer.keypair,
        lambda: describe(peer, spec, stage, throughput, work),
        peer.discovery.announce_interval,
        peer.discovery.record_ttl,
    )
    return stage, announcer, throughput


async def proof_of_work(peer: DhtPeer) -> int:
    """The nonce this peer's records carry (``--work-bits``), solved off the event loop."""
    discovery = peer.discovery
    return await trio.to_thread.run_sync(solve, peer.peer_id, discovery.region, discovery.work_bits)


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


@dataclass
class Served:
    """What this node serves now; a promotion replaces it whole."""

    spec: ModelSpec
    checkpoint: Path
    stage: StageServer
    throughput: float

    @property
    def layers(self) -> tuple[int, int]:
        return self.stage.blocks.layer_start, self.stage.blocks.layer_end

    @property
    def weights_gb(self) -> float:
        start, end = self.layers
        return block_gb(self.spec) * (end - start)


class Node:
    """A running node's parts that a promotion changes: the stage it serves, what it
    announces, and the coordinator's own stage."""

    def __init__(self, config: NodeConfig, peer: DhtPeer, tokens: TokenService, hardware: Hardware) -> None:
        self.config, self.peer, self.tokens = config, peer, tokens
        self.dtype, self.device = WIRE_DTYPES[config.dtype], config.torch_device()
        self.backend = hardware.runtime_backend(config.runtime_backend)
        # MLX blocks run as loaded: auto means no quantization and no torch.compile there
        mlx = self.backend == MLX
        self.compiling = config.compile == "on" if mlx else should_compile(config.compile, self.device)
        self.ledger = Ledger(config.home / LEDGER_FILE)  # barter credits: one per node, whatever it serves
        self.served: Served | None = None
        self.coordinator: Coordinator | None = None
        self.announcer: Announcer | None = None

    async def memory_gb(self) -> float:
        """Memory for weights free now, counting what the blocks served now would free."""
        hardware = await trio.to_thread.run_sync(detect)  # not behind forward passes in the compute thread
        served = self.served.weights_gb if self.served is not None else 0.0
        return hardware.memory_for_weights_gb(str(self.device)) + served

    async def serve(self, spec: ModelSpec, layers: tuple[int, int]) -> None:
        """Load and serve ``spec``'s blocks ``layers``; new sessions go to them from then on
        (open ones finish on the blocks they began on)."""
        wanted = self.config.quantization
        if self.backend == MLX:
            quantization = "none" if wanted == "auto" else wanted
        else:
            quantization = resolve_quantization(wanted, self.device, spec.recommended_quantization)
        checkpoint = await run_compute(resolve_checkpoint, spec, self.config.model_path)
        stage, throughput = await load_blocks(
            self.peer, spec, checkpoint, layers, self.dtype, self.device, self.config.stage_limits,
            self.ledger, quantization, self.compiling, self.backend,
        )
        stage.tokens = self.tokens
        self.served = Served(spec, checkpoint, stage, throughput)
        if self.coordinator is not None:
            self.coordinator.local = stage
            self.coordinator.checkpoints[spec.id] = checkpoint

    async def move(self, spec: ModelSpec) -> None:
        """Promotion: serve ``spec``'s least-covered blocks that fit, and announce them."""
        await self.serve(spec, await choose_layers(self.peer, self.config, spec, await self.memory_gb()))
        if self.announcer is not None:
            await self.announcer.announce_once()

    @property
    def stage(self) -> StageServer:
        assert self.served is not None
        return self.served.stage

    @property
    def spec(self) -> ModelSpec:
        assert self.served is not None
        return self.served.spec

    def record(self, work: int) -> PeerRecord:
        served = self.served
        assert served is not None
        return describe(self.peer, served.spec, served.stage, served.throughput, work)


async def run_node(
    config: NodeConfig,
    on_ready: Callable[[dict[str, Any]], None] = lambda status: None,
    stopping: trio.Event | None = None,
) -> None:
    """Run until ``stopping`` is set (then drain live streams and return) or until cancelled.
    ``on_ready`` receives the first status once everything listens."""
    catalog = load_catalog()
    config.torch_device()  # an unknown --device fails before anything listens
    ensure_port_free(config.host, config.port, "--port")  # fail before loading anything
    ensure_port_free(config.api_host, config.api_port, "--api-port")
    discovery = config.discovery
    hardware = await run_compute(detect)
    log.info("hardware: %s", hardware.describe())
    async with open_dht_peer(config.home, config.host, config.port, discovery) as peer:
        tokens = TokenService(peer.host, peer.keypair, config.home, config.token, discovery.bootstrap)
        node = Node(config, peer, tokens, hardware)
        memory = hardware.memory_for_weights_gb(str(node.device))  # detected a moment ago
        spec = await choose_model(peer, config, catalog, memory)
        await node.serve(spec, await choose_layers(peer, config, spec, memory))
        work = await proof_of_work(peer)
        announcer = Announcer(
            peer.dht, peer.keypair, lambda: node.record(work), discovery.announce_interval,
            discovery.record_ttl,
        )
        node.announcer = announcer
        promoter = Promoter(
            peer.dht, catalog, lambda: node.spec, node.memory_gb, node.move,
            every=2 * discovery.announce_interval, enabled=config.chooses_model and config.promote,
        )
        coordinator = node.coordinator = Coordinator(
            peer.host, peer.dht, catalog, local=node.stage, dtype=node.dtype, device=node.device,
            checkpoints={spec.id: node.served.checkpoint}, privacy=config.privacy,
            verification=config.verification,
            reputation=Reputation(config.home / REPUTATION_FILE, stake_of=tokens.stake_of),
            tokens=tokens, quantization=node.stage.blocks.quantization, compile=node.compiling,
            draft_tokens=config.draft_tokens, wire_dtype=config.wire_dtype, compaction=config.compaction,
        )

        def status() -> dict[str, Any]:
            last = announcer.last
            served = node.served
            return {
                "role": "node",
                **peer.status(),
                "api": f"http://{config.api_host}:{config.api_port}",
                "hardware": hardware.describe(),
                "model": served.spec.id,
                "layers": list(served.layers),
                "total_layers": served.spec.num_layers,
                "throughput_tokens_s": round(served.throughput, 1),
                "stage": served.stage.status(),
                "promotion": promoter.status(),
                **coordinator.status(),
                "announce": {
                    "interval_s": discovery.announce_interval,
                    "ttl_s": discovery.record_ttl,
                    "last_seq": last.seq if last else None,
                    "stored_on": announcer.last_stored_on,
                },
            }

        app = create_app(peer.dht, status, catalog, coordinator, config.api, node_gauges(node, tokens))
        async with trio.open_nursery() as nursery:
            await nursery.start(coordinator.auditor.run)
            await nursery.start(tokens.run, config.token.mint_every_s)
            await nursery.start(announcer.run)
            await nursery.start(promoter.run)
            await nursery.start(serve_http, app, config.api_host, config.api_port)
            on_ready(status())
            await (trio.Event() if stopping is None else stopping).wait()
            await generation_service(app).drain()
            nursery.cancel_scope.cancel()


def node_gauges(node: Node, tokens: TokenService) -> Gauges:
    """The node's Prometheus gauges; they read whatever the node serves at scrape time."""
    coordinator = node.coordinator
    assert coordinator is not None

    def served_blocks() -> float:
        start, end = node.served.layers
        return end - start

    def prefixes(read: Callable[[PrefixStore], float]) -> Callable[[], float]:
        return lambda: read(node.stage.prefixes) if node.stage.prefixes is not None else 0

    return {
        "hydra_stage_sessions": (
            "Open pipeline sessions on this node's stage", lambda: len(node.stage.sessions)
        ),
        "hydra_active_generations": (
            "Generations this node coordinates now", lambda: len(coordinator.active_pipelines)
        ),
        "hydra_known_peers": ("Peers in the DHT routing table", lambda: len(node.peer.dht.routing)),
        "hydra_layers_served": ("Transformer blocks this node serves", served_blocks),
        "hydra_stage_batch_rows": (
            "Mean rows per forward pass of this node's stage (batched sessions)",
            lambda: node.stage.batcher.stats.mean_rows,
        ),
        "hydra_prefix_cache_blocks": ("Prompt blocks this node's stage keeps for reuse", prefixes(len)),
        "hydra_prefix_cache_reused_blocks": (
            "Prompt blocks restored into sessions instead of recomputed", prefixes(lambda store: store.hits)
        ),
        "hydra_kv_compactions": (
            "KV cache compactions this node's stage has run (Attention Matching)",
            lambda: node.stage.compactions,
        ),
        "hydra_barter_credits": (
            "Barter credits: earned serving minus spent consuming, decayed",
            lambda: coordinator.barter_status()["credits"],
        ),
        **audit_gauges(coordinator),
        **tokens.gauges(),
    }


def audit_gauges(coordinator: Coordinator) -> Gauges:
    """What this node's coordinator found checking the stages it routes through, since start."""

    def count(field: str) -> Callable[[], float]:
        return lambda: getattr(coordinator.auditor.stats, field)

    return {
        "hydra_audits_passed": ("Audited stage steps that matched the verifier", count("passed")),
        "hydra_audits_failed": ("Audited stage steps that did not match the verifier", count("failed")),
        "hydra_audits_unverifiable": ("Audited stage steps no verifier could check", count("unverifiable")),
        "hydra_verification_probes": ("Synthetic probe generations run to check stages", count("probes")),
    }
