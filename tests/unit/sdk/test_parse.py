"""hydra.sdk.parse and hydra.sdk.types: a node's JSON read tolerantly into frozen dataclasses
(unknown fields ignored, missing or mistyped optional ones at their defaults, required ones
checked). The payloads are what a node serving the tiny test model answered."""

import dataclasses

import pytest

from hydra.sdk.errors import UnexpectedResponse
from hydra.sdk.parse import build
from hydra.sdk.types import Balance, ChatCompletion, Chunk, HydraAccount, Model, NetworkStatus

STATUS = {
    "addrs": ["/ip4/127.0.0.1/tcp/35957/p2p/12D3KooWE5vc"], "api": "http://127.0.0.1:59263",
    "announce": {"interval_s": 60.0, "last_seq": 1796077452453, "stored_on": 1, "ttl_s": 180.0},
    "connections": 0,
    "economy": {"barter": {"credits": 0.0, "decay_per_day": 0.05, "micro_credits": 0},
                "hydra": {"federation": None}},
    "generations": [{"model": "tiny", "position": 12, "failovers": 0,
                     "route": [{"peer_id": "12D3KooWE5vc", "layers": [0, 6], "local": True}]}],
    "hardware": "2 CPU cores, 23.5 GB memory (20.1 GB free), no GPU", "layers": [0, 6], "model": "tiny",
    "peer_id": "12D3KooWE5vc", "promotion": {"could": None, "enabled": False, "moves": []},
    "records_held": 2,
    "reputation": [{"peer_id": "12D3KooWother", "total": 0.9, "verification": 1.0, "uptime": 1.0,
                    "latency": 0.8, "stake": 0.0, "checks_passed": 3.0, "checks_failed": 0.0,
                    "admissible": True}],
    "role": "node", "routing_table": 0, "signposts": {"answered": 0, "configured": 0},
    "stage": {"backend": "pytorch", "batching": {"batches": 0, "busy_s": 0.0, "largest": 0, "max_batch": 16,
                                                 "mean_rows": 0.0},
              "cache_tokens_free": 524288, "compactions": 0, "compiled": False, "layers": [0, 6],
              "model": "tiny", "precision": "float32",
              "prefix_cache": {"blocks": 0, "bytes": 0, "kept": 0, "reused": 0}, "sessions": 0,
              "steps_served": 0, "tokens_served": 0},
    "throughput_tokens_s": 14.7, "total_layers": 6, "uptime_s": 17.9,
    "verification": {"audits": {"chosen": 0, "dropped": 0, "failed": 0, "passed": 0, "unverifiable": 0},
                     "min_reputation": 0.5, "probes_only": False, "probes_run": 0, "redundancy": 1,
                     "verify_rate": 0.1},
    "version": "0.1.0",
}
ACCOUNT = {"hydra": 12.5, "staked": 2.0, "unbonding": 0.0, "unbonding_until": None, "burned": 0.01,
           "slashed": 0.0, "supply": 100.0, "log_length": 7,
           "channels": [{"id": "3f2a", "payer": "12D3KooWme", "payee": "12D3KooWyou", "deposit": 5.0,
                         "paid": 0.25, "nonce": 3, "closing_until": None}]}


def test_network_status_reads_every_part() -> None:
    status = build(NetworkStatus, STATUS)
    assert status.peer_id == "12D3KooWE5vc" and status.role == "node" and status.model == "tiny"
    assert status.layers == (0, 6) and status.total_layers == 6 and status.throughput_tokens_s == 14.7
    assert status.stage and status.stage.precision == "float32"
    assert status.stage.batching == STATUS["stage"]["batching"]  # open-ended: as it came
    assert status.generations[0].route[0].layers == (0, 6) and status.generations[0].route[0].local
    assert status.reputation[0].admissible and status.reputation[0].total == 0.9
    assert status.verification and status.verification.audits == {"chosen": 0, "dropped": 0, "failed": 0,
                                                                  "passed": 0, "unverifiable": 0}
    assert status.announce and status.announce.stored_on == 1
    assert status.promotion and status.promotion.enabled is False and status.promotion.could is None
    assert status.economy and status.economy.hydra is None and status.economy.federation is None


def test_unknown_fields_are_ignored_and_missing_or_mistyped_ones_take_defaults() -> None:
    status = build(NetworkStatus, {"peer_id": "p", "future_field": {"x": 1}, "uptime_s": "long",
                                   "layers": [0, "six", 6], "stage": "busy"})
    assert status.uptime_s is None and status.stage is None and status.layers == (0, 6)
    assert status.addrs == () and status.economy is None


def test_numbers_are_read_strictly() -> None:
    usage = build(ChatCompletion, {"id": "c", "model": "m", "usage": {"prompt_tokens": True,
                                                                      "completion_tokens": 2}}).usage
    assert usage and usage.prompt_tokens == 0 and usage.completion_tokens == 2  # true is not a count
    liquid = build(HydraAccount, {"hydra": 3}).liquid
    assert liquid == 3.0 and isinstance(liquid, float)


def test_a_missing_required_field_is_an_unexpected_response() -> None:
    with pytest.raises(UnexpectedResponse, match="Model without 'id'"):
        build(Model, {"object": "model"})
    with pytest.raises(UnexpectedResponse, match="JSON object"):
        build(Model, ["tiny"])


def test_balance_without_a_federation_says_so_and_with_one_reads_the_account() -> None:
    alone = build(Balance, {"peer_id": "p", "barter": {"credits": 1.5, "micro_credits": 1_500_000,
                                                        "decay_per_day": 0.05},
                            "hydra": {"federation": None}})
    assert alone.hydra is None and alone.federation is None and alone.barter.credits == 1.5
    member = build(Balance, {"peer_id": "p", "hydra": {"federation": {"members": 3, "k": 2}, **ACCOUNT}})
    assert member.federation and member.federation.k == 2
    assert member.hydra and member.hydra.liquid == 12.5 and member.hydra.channels[0].nonce == 3


def test_results_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        build(Model, {"id": "tiny"}).id = "other"  # type: ignore[misc]


def test_chunks_give_their_text_for_chat_and_completion_streams() -> None:
    chat = build(Chunk, {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "Hi"},
                                                                "finish_reason": None}]})
    text = build(Chunk, {"id": "c", "model": "m", "choices": [{"index": 0, "text": " there",
                                                                "finish_reason": "stop"}]})
    usage = build(Chunk, {"id": "c", "model": "m", "choices": [], "usage": {"total_tokens": 3}})
    role = build(Chunk, {"id": "c", "model": "m", "choices": [{"delta": {"role": "assistant"}}]})
    assert (chat.delta, text.delta, usage.delta, role.delta) == ("Hi", " there", "", "")
    assert text.finish_reason == "stop" and usage.finish_reason is None and usage.usage


def test_a_list_item_lacking_a_required_field_is_dropped_not_fatal() -> None:
    status = build(NetworkStatus, {"peer_id": "p", "generations": [{"route": [{"layers": [0, 6]},
                                                                              {"peer_id": "q"}]}]})
    assert [hop.peer_id for hop in status.generations[0].route] == ["q"]
