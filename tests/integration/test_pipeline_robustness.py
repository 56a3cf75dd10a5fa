"""Failure paths of a pipeline over real libp2p hosts (tiny Llama): a request cancelled while
its route is still opening leaves no session behind, a last stage that returns a malformed
tensor is routed around instead of crashing the request, and stalled, failing and vanished
stages are each blamed by name."""

import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import torch
import trio

from hydra.coordinator.generation import Completion, Coordinator, Delta, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.coordinator.routing import NoRoute
from hydra.models.catalog import Catalog
from hydra.runtime.wire import to_wire
from hydra.stage.server import StageConversation
from hydra.verification.config import VerificationConfig
from protocols import inference
from tests.peers import MisbehavingOutput, replace_handler, spec_for, stage_peer, swarm
from tests.tiny_models import save_tiny_model, tiny_llama_config

SPEC = spec_for("tiny-llama", 6)
REQUEST = GenerationRequest(SPEC.id, prompt="Hello there", params=SamplingParams(max_tokens=8))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("ckpt") / "tiny-llama")


class NeverOpens(StageConversation):
    """A stage that accepts the stream but never answers the session open."""

    async def handle(self, message):
        if isinstance(message, inference.OpenSession):
            await trio.sleep_forever()
        return await super().handle(message)


class WrongShape(MisbehavingOutput):
    """A last stage that seals a tensor of the wrong width in place of its output."""

    last_only = True

    @staticmethod
    def wrap(channel, tensor, position):
        return channel.wrap(to_wire(torch.zeros(1, 1, 7), tensor.dtype), position)


@asynccontextmanager
async def serving_node(checkpoint: Path, layers: tuple[int, int], bootstrap: str):
    """A node like ``hydra run``: it serves ``layers`` and coordinates through its own stage."""
    async with stage_peer(SPEC, checkpoint, layers, (bootstrap,)) as peer:
        yield peer, Coordinator(
            peer.dht_peer.host, peer.dht_peer.dht, Catalog(SPEC.id, (SPEC,)), local=peer.stage,
            step_timeout=20.0, checkpoints={SPEC.id: checkpoint},
        )


async def test_a_request_cancelled_while_its_route_opens_leaves_no_session(checkpoint):
    """The node's own stage opens its session, then waits on a next hop that never answers;
    the request is cancelled (a client hanging up). Nothing but the request would ever close
    that in-process session, so it must be closed on the way out."""
    async with swarm(SPEC, checkpoint, [(3, 6)]) as (peers, _):
        replace_handler(peers[0], NeverOpens)
        async with serving_node(checkpoint, (0, 3), peers[0].multiaddr) as (node, coordinator):
            with trio.fail_after(15):
                while len(await coordinator.candidates(SPEC.id)) < 2:
                    await trio.sleep(0.1)
            with trio.move_on_after(1.0) as cancelled:
                await coordinator.generate(REQUEST)
            assert cancelled.cancelled_caught, "the open should still be waiting"
            assert node.stage.sessions == {} and node.stage.reserved_bytes == 0


async def test_a_malformed_output_is_routed_around(checkpoint):
    async with swarm(SPEC, checkpoint, [(0, 3), (3, 6)]) as (peers, coordinator):
        expected = await coordinator.generate(REQUEST)
        replace_handler(peers[1], WrongShape)
        with pytest.raises(NoRoute) as alone:  # the only peer for 3:6: excluded, clearly
            await coordinator.generate(REQUEST)
        assert "expected float32 [1, 1, 64]" in str(alone.value)
        async with stage_peer(SPEC, checkpoint, (3, 6), (peers[0].multiaddr,)) as spare:
            with trio.fail_after(15):
                while spare.peer_id not in {c.peer_id for c in await coordinator.candidates(SPEC.id)}:
                    await trio.sleep(0.1)
            done = await coordinator.generate(REQUEST)
    assert done.token_ids == expected.token_ids and done.route[-1] == spare.peer_id


class NeverSteps(StageConversation):
    """A stage that opens sessions but never answers a step (a stall)."""

    async def handle(self, message):
        if isinstance(message, inference.Step):
            await trio.sleep_forever()
        return await super().handle(message)


async def test_a_stall_is_blamed_on_the_stalled_peer_after_a_slow_stage(checkpoint):
    """The first stage computes for a quarter of the step timeout, then its successor stalls.
    The first stage must report the stall with the time it has left, before the coordinator
    gives up on it and excludes the wrong, healthy peer."""
    async with swarm(SPEC, checkpoint, [(0, 3), (3, 6)]) as (peers, coordinator):
        first, stalled = peers
        real = first.stage.run_chunks

        def slow(*args):
            time.sleep(1.0)
            return real(*args)

        first.stage.run_chunks = slow
        replace_handler(stalled, NeverSteps)
        coordinator.step_timeout = 4.0
        with pytest.raises(NoRoute) as info:
            await coordinator.generate(REQUEST)
    assert f"excluded {stalled.peer_id}" in str(info.value)
    assert f"excluded {first.peer_id}" not in str(info.value)


class FailsSteps(StageConversation):
    """A stage whose forward pass fails (say, out of memory) on every step."""

    async def compute(self, session, step, hidden):
        raise RuntimeError("CUDA out of memory (simulated)")


async def test_a_failing_middle_stage_is_named_at_once_on_a_direct_route(checkpoint):
    """Its error travels on through the last stage to the coordinator, which excludes it
    without waiting for the step timeout."""
    async with swarm(SPEC, checkpoint, [(0, 2), (2, 4), (4, 6)]) as (peers, coordinator):
        replace_handler(peers[1], FailsSteps)
        coordinator.step_timeout = 120.0
        with trio.fail_after(30), pytest.raises(NoRoute) as info:
            await coordinator.generate(REQUEST)
    assert f"excluded {peers[1].peer_id}: internal: RuntimeError: CUDA out of memory" in str(info.value)
    assert f"excluded {peers[0].peer_id}" not in str(info.value)
    assert f"excluded {peers[2].peer_id}" not in str(info.value)


async def test_a_vanished_middle_stage_is_reported_by_its_successor(checkpoint):
    """A middle stage's host dies mid-generation: the last stage, whose predecessor it was,
    names it to the coordinator, which fails over to the other copy of its blocks at once and
    finishes with the tokens of an undisturbed run."""
    request = GenerationRequest(SPEC.id, prompt="Hello there", params=SamplingParams(max_tokens=16))
    spans, no_audits = [(0, 2), (2, 4), (2, 4), (4, 6)], VerificationConfig(verify_rate=0.0)
    async with swarm(SPEC, checkpoint, spans, verification=no_audits) as (peers, coordinator):
        expected = await coordinator.generate(request)
        coordinator.step_timeout = 120.0
        stopped = None
        with trio.fail_after(60):
            async for event in coordinator.stream(request):
                if stopped is None and isinstance(event, Delta) and event.token_ids:
                    (stopped,) = [p for p in peers[1:3] if p.stage.sessions]
                    await stopped.stop()
                done = event
    assert isinstance(done, Completion) and done.token_ids == expected.token_ids
    assert stopped is not None and stopped.peer_id not in done.route and done.failovers == 1


async def test_a_late_output_is_waited_for_once_every_stage_has_computed_it(checkpoint):
    """One step takes the first stage longer than the step timeout. The probe finds every
    stage past the step, so the coordinator waits for the output instead of blaming the last
    stage, and the generation ends as an undisturbed one."""
    async with swarm(SPEC, checkpoint, [(0, 3), (3, 6)]) as (peers, coordinator):
        expected = await coordinator.generate(REQUEST)
        first = peers[0]
        real, calls = first.stage.run_chunks, []

        def slow_once(*args):
            calls.append(1)
            if len(calls) == 3:  # a decode step
                time.sleep(2.5)
            return real(*args)

        first.stage.run_chunks = slow_once
        coordinator.step_timeout = 2.0
        done = await coordinator.generate(REQUEST)
    assert len(calls) > 3 and done.failovers == 0 and done.token_ids == expected.token_ids
