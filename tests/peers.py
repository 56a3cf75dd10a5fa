"""In-process pipeline peers for integration tests: each one a real libp2p host on 127.0.0.1
with its own DHT node, stage server and signed announcement; plus a coordinator that finds
them through the DHT like any other node would."""

import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import trio
from libp2p.custom_types import TProtocol

from hydra.coordinator.generation import Coordinator
from hydra.dht.service import DhtPeer, open_dht_peer
from hydra.economy.config import TokenConfig
from hydra.economy.service import TokenService
from hydra.models.catalog import Catalog, ModelSpec
from hydra.node import start_stage
from hydra.p2p.streams import Outbox, serve
from hydra.runtime.backends import MLX, PYTORCH
from hydra.stage.limits import StageLimits
from hydra.stage.server import StageConversation, StageServer
from hydra.verification.config import VerificationConfig
from hydra.verification.reputation import Reputation
from protocols import inference
from protocols.ids import INFERENCE
from tests.factories import discovery


def spec_for(model_id: str, num_layers: int) -> ModelSpec:
    return ModelSpec(
        id=model_id, family="test", hub_id="", architecture="test", num_layers=num_layers,
        parameters=0, memory_per_shard_gb=0.0, recommended_quantization="none",
        peers_needed=1, quality_tier="test",
    )


@dataclass(frozen=True)
class Compute:
    """Where and in what precision a test's stages and client head run."""

    device: torch.device
    dtype: torch.dtype
    quantization: str = "none"
    compile: bool = False  # off: each compile of a span costs tens of seconds
    mlx_spans: tuple[tuple[int, int], ...] = ()  # stages of these spans run MLX (needs mlx-lm)


CPU = Compute(torch.device("cpu"), torch.float32)


@dataclass
class StagePeer:
    dht_peer: DhtPeer
    stage: StageServer

    @property
    def peer_id(self) -> str:
        return self.dht_peer.peer_id

    @property
    def multiaddr(self) -> str:
        return self.dht_peer.multiaddrs()[0]

    async def stop(self) -> None:
        """Abrupt: the host closes its connections, as a crashed process's would drop."""
        await self.dht_peer.host.close()


@asynccontextmanager
async def stage_peer(
    spec: ModelSpec,
    checkpoint: Path,
    layers: tuple[int, int],
    bootstrap: tuple[str, ...] = (),
    limits: StageLimits = StageLimits(),
    kad_rate: float = 200.0,
    on: Compute = CPU,
    token: TokenConfig | None = None,
) -> AsyncIterator[StagePeer]:
    config = discovery(*bootstrap, peer_rate=kad_rate, peer_burst=2 * kad_rate)
    async with open_dht_peer(None, "127.0.0.1", 0, config) as peer, token_service(peer, token) as tokens:
        stage, announcer, _ = await start_stage(
            peer, spec, checkpoint, layers, on.dtype, on.device, limits,
            quantization=on.quantization, compile=on.compile,
            backend=MLX if layers in on.mlx_spans else PYTORCH,
        )
        stage.tokens = tokens
        async with trio.open_nursery() as nursery:
            await nursery.start(announcer.run)  # re-announces as the swarm grows
            yield StagePeer(peer, stage)
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def token_service(peer: DhtPeer, token: TokenConfig | None) -> AsyncIterator[TokenService | None]:
    """With ``token``: ``peer``'s wallet, following the federation it names (home in a temp dir)."""
    if token is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as home:
        service = TokenService(peer.host, peer.keypair, Path(home), token)
        assert await service.connect() is not None, "no federation member answered"
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run, 3600.0)  # slashes at once; mints when a test asks
            yield service
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def swarm(
    spec: ModelSpec,
    checkpoint: Path,
    spans: list[tuple[int, int]],
    on: Compute = CPU,
    verification: VerificationConfig = VerificationConfig(),
    token: TokenConfig | None = None,
) -> AsyncIterator[tuple[list[StagePeer], Coordinator]]:
    """Stage peers serving ``spans`` (the first is everyone's bootstrap) and a coordinator
    with no blocks of its own, joined through the first peer; all computing ``on``, and with
    ``token`` all following a token federation."""
    async with AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(stage_peer(spec, checkpoint, spans[0], on=on, token=token))]
        for span in spans[1:]:
            peers.append(
                await stack.enter_async_context(
                    stage_peer(spec, checkpoint, span, (peers[0].multiaddr,), on=on, token=token)
                )
            )
        client = await stack.enter_async_context(
            coordinator_for(spec, checkpoint, peers[0].multiaddr, on, verification, token)
        )
        with trio.fail_after(15):  # every record announced and findable before the test
            while len(await client.candidates(spec.id)) < len(peers):
                await trio.sleep(0.1)
        yield peers, client


@asynccontextmanager
async def coordinator_for(
    spec: ModelSpec,
    checkpoint: Path,
    bootstrap: str,
    on: Compute = CPU,
    verification: VerificationConfig = VerificationConfig(),
    token: TokenConfig | None = None,
) -> AsyncIterator[Coordinator]:
    """A coordinator with no blocks of its own, joined through ``bootstrap``, its auditor
    recomputing in the background as a node's does."""
    async with (
        open_dht_peer(None, "127.0.0.1", 0, discovery(bootstrap)) as client,
        token_service(client, token) as tokens,
    ):
        coordinator = Coordinator(
            client.host, client.dht, Catalog(spec.id, (spec,)), dtype=on.dtype,
            device=on.device, step_timeout=20.0, checkpoints={spec.id: checkpoint},
            verification=verification, tokens=tokens, quantization=on.quantization, compile=on.compile,
            reputation=Reputation(stake_of=tokens.stake_of) if tokens is not None else None,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(coordinator.auditor.run)
            yield coordinator
            nursery.cancel_scope.cancel()


def replace_handler(
    peer: StagePeer, make: Callable[[StageServer, str, Outbox], StageConversation]
) -> None:
    """Serve the inference protocol on ``peer`` with a conversation class of the test's."""
    peer.dht_peer.host.set_stream_handler(
        TProtocol(INFERENCE),
        serve(inference.REQUESTS,
              conversation=lambda remote, outbox: make(peer.stage, remote.to_base58(), outbox),
              max_frame=inference.MAX_FRAME),
    )


class MisbehavingOutput(StageConversation):
    """A stage whose sessions send their output through ``wrap(channel, tensor, position)``
    instead of their activation channel's own ``wrap``: tests make it tamper. ``last_only``:
    only when this stage is the last of the route; else only when it is not."""

    last_only = False

    @staticmethod
    def wrap(channel, tensor, position):
        return channel.wrap(tensor, position)

    async def _open(self, request):
        reply = await super()._open(request)
        session = self.session
        if session is not None and (session.downstream is None) == self.last_only:
            session.outbound = _Rewired(session.outbound, self.wrap)
        return reply


@dataclass
class _Rewired:
    channel: Any
    rewrite: Callable[[Any, Any, int], Any]

    def wrap(self, tensor, position: int):
        return self.rewrite(self.channel, tensor, position)
