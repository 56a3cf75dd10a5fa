"""A request plans its route once, at admission, and its pipeline opens along that route (a
DHT lookup costs ~10-25 ms of time to first token); only a failover looks again."""

from pathlib import Path

import httpx
import trio

from hydra.api.app import create_app
from hydra.api.server import serve_http
from hydra.coordinator.generation import GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.keyspace import model_key
from tests.peers import spec_for, stage_peer, swarm
from tests.swarm import free_port
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


async def test_a_request_plans_once_and_opens_along_that_route(tmp_path: Path) -> None:
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    spec = spec_for("tiny-llama", 6)
    request = GenerationRequest(spec.id, prompt="Hello", params=SamplingParams(max_tokens=4))
    async with swarm(spec, path, SPANS) as (peers, coordinator):
        lookups = counting_lookups(coordinator)
        route = await coordinator.plan(spec.id)
        assert route is not None
        first = await coordinator.generate(request, route)
        assert len(lookups) == 1, "the pipeline should open along the planned route"
        assert first.route == [c.peer_id for c in route] == [p.peer_id for p in peers]

        again = await coordinator.generate(request)  # no route given: planned at the start
        assert len(lookups) == 2
        assert again.token_ids == first.token_ids


async def test_an_api_request_makes_one_lookup(tmp_path: Path) -> None:
    """Over real HTTP: the API's admission check plans the route the generation then uses."""
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    spec = spec_for("tiny-llama", 6)
    async with swarm(spec, path, SPANS) as (_, coordinator), trio.open_nursery() as nursery:
        port = free_port()
        app = create_app(coordinator.dht, dict, coordinator.catalog, coordinator)
        await nursery.start(serve_http, app, "127.0.0.1", port)
        lookups = counting_lookups(coordinator)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            reply = await client.post("/v1/completions", json={
                "model": spec.id, "prompt": "Hello", "max_tokens": 4, "temperature": 0})
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 4
        assert lookups == [model_key(spec.id)], "one DHT lookup for the whole request"
        nursery.cancel_scope.cancel()


async def test_a_failover_looks_again(tmp_path: Path) -> None:
    """The route the request was admitted on is out of date: a peer in it has died and a
    replacement has joined since. The failed open excludes the dead peer and a fresh lookup
    finds the replacement; the output is unchanged."""
    path = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    spec = spec_for("tiny-llama", 6)
    request = GenerationRequest(spec.id, prompt="Hello", params=SamplingParams(max_tokens=4))
    async with swarm(spec, path, SPANS) as (peers, coordinator):
        expected = await coordinator.generate(request)
        lookups = counting_lookups(coordinator)
        route = await coordinator.plan(spec.id)  # the admission's plan
        async with stage_peer(spec, path, SPANS[1], (peers[0].multiaddr,)) as spare:
            with trio.fail_after(15):  # announced: another node's lookup finds it
                while spare.peer_id not in await serving(peers[0], spec.id):
                    await trio.sleep(0.1)
            await peers[1].stop()
            done = await coordinator.generate(request, route)
    assert len(lookups) == 2, "the admission's lookup, then one fresh lookup after the failure"
    assert done.route == [peers[0].peer_id, spare.peer_id] and done.failovers == 1
    assert done.token_ids == expected.token_ids


async def serving(peer, model: str) -> set[str]:
    return {e.record.peer_id for e in await peer.dht_peer.dht.get(model_key(model))}
