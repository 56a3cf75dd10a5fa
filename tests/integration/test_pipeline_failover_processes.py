"""Failover with real processes: four ``hydra run`` nodes (SmolLM2 blocks 0:10, 10:20 twice,
20:30) behind a signpost, and a coordinator in this process that finds them through the DHT.
The middle peer in use is SIGKILLed mid-generation; the generation must finish with exactly
the tokens of an undisturbed run."""

import signal
from contextlib import aclosing

import pytest

from hydra.coordinator.generation import Completion, Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.service import open_dht_peer
from hydra.generate import wait_for_route
from hydra.models.catalog import load_catalog
from tests.factories import discovery
from tests.swarm import signpost_and_nodes

pytestmark = pytest.mark.slow

REQUEST = GenerationRequest(
    "smollm2",
    messages=({"role": "user", "content": "Write a short poem about the sea."},),
    params=SamplingParams(max_tokens=48),
)


@pytest.fixture(scope="module")
def processes(tmp_path_factory, smollm2_checkpoint):
    spans = {"a": "0:10", "b1": "10:20", "b2": "10:20", "c": "20:30"}
    with signpost_and_nodes(tmp_path_factory.mktemp("failover"), spans) as (_, boot, nodes):
        yield boot, nodes


async def test_killing_the_middle_peer_mid_generation_changes_nothing(processes):
    boot, nodes = processes
    by_peer_id = {proc.peer_id: proc for proc in nodes.values()}
    catalog = load_catalog()
    async with open_dht_peer(None, "127.0.0.1", 0, discovery(boot)) as client:
        coordinator = Coordinator(client.host, client.dht, catalog, step_timeout=15.0)
        await wait_for_route(coordinator, "smollm2", 30.0)
        undisturbed = await coordinator.generate(REQUEST)
        assert undisturbed.completion_tokens >= 16 and undisturbed.failovers == 0

        killed = None
        completion = None
        async with aclosing(coordinator.stream(REQUEST)) as events:
            async for event in events:
                if isinstance(event, Completion):
                    completion = event
                elif killed is None:
                    (pipeline,) = coordinator.active_pipelines
                    if pipeline.position > 20:  # prompt plus a few generated tokens
                        killed = pipeline.route[1].peer_id
                        by_peer_id[killed].proc.send_signal(signal.SIGKILL)
        assert killed is not None, "the generation ended before the kill"
        assert completion is not None and completion.failovers >= 1
        assert killed not in completion.route
        assert completion.token_ids == undisturbed.token_ids
        assert completion.text == undisturbed.text
