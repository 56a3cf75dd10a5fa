"""One hostile peer against a stage (real libp2p hosts, tiny Llama): it grabs sessions, sends
oversized frames and floods messages; its share of slots and cache and its message rate are
capped, and an honest coordinator's generations complete unchanged meanwhile."""

import pytest
import trio
from libp2p.custom_types import TProtocol

from hydra.coordinator.generation import GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.stage.limits import StageLimits
from protocols import inference
from protocols.codec import Error
from protocols.framing import encode_frame
from protocols.ids import INFERENCE
from tests.integration.test_stage_protocol_real_hosts import link_to, open_request
from tests.peers import coordinator_for, spec_for, stage_peer
from tests.rawpeer import client_host
from tests.tiny_models import save_tiny_model, tiny_llama_config

SPEC = spec_for("tiny-llama", 6)
LIMITS = StageLimits(max_sessions=8, peer_share=0.5, peer_rate=100.0, peer_burst=60.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("ckpt") / "tiny-llama")


async def test_a_flooding_peer_is_contained_and_others_keep_generating(checkpoint):
    request = GenerationRequest(SPEC.id, prompt="honest work", params=SamplingParams(max_tokens=12))
    async with stage_peer(SPEC, checkpoint, (0, 6), limits=LIMITS) as target:
        async with coordinator_for(SPEC, checkpoint, target.multiaddr) as coordinator:
            baseline = await coordinator.generate(request)
            results, outcomes = [], {}

            async def honest() -> None:
                for _ in range(3):
                    results.append(await coordinator.generate(request))

            async def attack() -> None:
                async with client_host() as host:
                    links = [await link_to(host, target) for _ in range(12)]
                    for link in links:  # grab every slot it can
                        reply = await link.call(open_request(target, max_length=16), 10.0)
                        kind = reply.code if isinstance(reply, Error) else reply.TYPE
                        outcomes[f"open:{kind}"] = outcomes.get(f"open:{kind}", 0) + 1
                    for _ in range(3):  # oversized frames: refused, stream reset
                        raw = await host.new_stream(target.dht_peer.host.get_id(), [TProtocol(INFERENCE)])
                        await raw.write((inference.MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 64)
                        await raw.close()
                    flood = links[0]
                    started = trio.current_time()
                    for _ in range(300):  # far above its message rate
                        await flood.stream.stream.write(encode_frame(b"\x81\xa1t\xa4step"))
                    for _ in range(300):
                        with trio.fail_after(10):
                            reply = await flood.stream.receive(inference.REPLIES)
                        kind = reply.code if isinstance(reply, Error) else reply.TYPE
                        outcomes[f"flood:{kind}"] = outcomes.get(f"flood:{kind}", 0) + 1
                    outcomes["flood_seconds"] = trio.current_time() - started

            async with trio.open_nursery() as nursery:
                nursery.start_soon(honest)
                nursery.start_soon(attack)
            held_by_attacker = len(target.stage.sessions)
        assert outcomes["open:opened"] == 4, outcomes  # half of 8 slots
        assert outcomes["open:overloaded"] == 8, outcomes
        # it got no more than its burst plus its rate over the flood's duration
        allowed = LIMITS.peer_burst + LIMITS.peer_rate * outcomes.pop("flood_seconds")
        assert outcomes["flood:bad_field"] <= allowed, outcomes
        assert outcomes["flood:overloaded"] + outcomes["flood:bad_field"] == 300
        assert outcomes["flood:overloaded"] >= 100, outcomes
        assert set(outcomes) <= {"open:opened", "open:overloaded", "flood:overloaded", "flood:bad_field"}
        assert [r.token_ids for r in results] == [baseline.token_ids] * 3
        assert held_by_attacker <= 4

