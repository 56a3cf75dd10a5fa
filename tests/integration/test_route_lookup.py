"""A request's route check and the pipeline it then opens share one DHT lookup (a lookup costs
~10-25 ms of time to first token); a failover or a stale lookup looks again."""

from pathlib import Path

import trio

from hydra.coordinator import pipeline
from hydra.coordinator.generation import GenerationRequest
from hydra.coordinator.sampling import SamplingParams
from hydra.dht.keyspace import model_key
from tests.peers import spec_for, stage_peer, swarm
from tests.tiny_models import save_tiny_model, tiny_llama_config

SPANS = [(0, 3), (3, 6)]


def counting_lookups(coordinator) -> list[str]:
    """Record every DHT lookup the coordinator makes (the real lookup still runs)."""
    keys: list[str] = []
    real_get = coordinator.dht.get

    async def get(key: str):
        keys.append(key)
        return await real_get(key)

    coordinator.dht.get = get
    return keys


async def test_route_check_and_pipeline_share_one_lookup(tmp_path: Path, monkeypatch) -> None:
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    spec = spec_for("tiny-llama", 6)
    request = GenerationRequest(spec.id, prompt="Hello", params=SamplingParams(max_tokens=4))
    async with swarm(spec, path, SPANS) as (_, coordinator):
        lookups = counting_lookups(coordinator)
        assert await coordinator.route_available(spec.id)
        first = await coordinator.generate(request)
        assert len(lookups) == 1, "the pipeline should plan on the route check's lookup"

        monkeypatch.setattr(pipeline, "LOOKUP_REUSE_S", 0.2)
        await trio.sleep(0.3)
        again = await coordinator.generate(request)
        assert len(lookups) == 2, "a lookup older than the reuse window is not reused"
        assert again.token_ids == first.token_ids


async def test_a_failover_looks_again(tmp_path: Path, monkeypatch) -> None:
    """The lookup the request starts from is out of date: a peer in it has died and a
    replacement has joined since. The failed open excludes the dead peer and a fresh lookup
    finds the replacement; the output is unchanged."""
    monkeypatch.setattr(pipeline, "LOOKUP_REUSE_S", 60.0)  # however slow this machine is
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    spec = spec_for("tiny-llama", 6)
    request = GenerationRequest(spec.id, prompt="Hello", params=SamplingParams(max_tokens=4))
    async with swarm(spec, path, SPANS) as (peers, coordinator):
        expected = await coordinator.generate(request)
        lookups = counting_lookups(coordinator)
        assert await coordinator.route_available(spec.id)  # the lookup to be reused
        async with stage_peer(spec, path, SPANS[1], (peers[0].multiaddr,)) as spare:
            with trio.fail_after(15):  # announced: another node's lookup finds it
                while spare.peer_id not in await serving(peers[0], spec.id):
                    await trio.sleep(0.1)
            await peers[1].stop()
            done = await coordinator.generate(request)
    assert len(lookups) == 2, "the reused lookup, then one fresh lookup after the failure"
    assert done.route == [peers[0].peer_id, spare.peer_id] and done.failovers == 1
    assert done.token_ids == expected.token_ids


async def serving(peer, model: str) -> set[str]:
    return {e.record.peer_id for e in await peer.dht_peer.dht.get(model_key(model))}
