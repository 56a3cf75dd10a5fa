"""Route planning, sampling, stop strings, placement and tensor wire format, in isolation."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hydra.coordinator.pipeline import pack_history
from hydra.coordinator.routing import Candidate, coverage, plan_route
from hydra.coordinator.sampling import Sampler, SamplingParams
from hydra.coordinator.text import TextAssembler
from hydra.runtime.wire import from_wire, to_wire
from hydra.stage.placement import least_covered_window
from protocols import inference
from protocols.codec import encode
from tests.tiny_models import byte_tokenizer


def peer(name: str, start: int, end: int, throughput: float = 0.0, **kw) -> Candidate:
    return Candidate(name, (f"/ip4/127.0.0.1/tcp/1/p2p/{name}",), start, end, throughput, **kw)


def names(route: list[Candidate] | None) -> list[str] | None:
    return None if route is None else [c.peer_id for c in route]


def test_route_tiles_the_layers_and_avoids_excluded_peers():
    peers = [peer("a", 0, 10), peer("b1", 10, 20), peer("b2", 10, 20), peer("c", 20, 30)]
    rtt = {"a": 0.01, "b1": 0.02, "b2": 0.05, "c": 0.01}
    assert names(plan_route(peers, 30, rtt)) == ["a", "b1", "c"]
    assert names(plan_route(peers, 30, rtt, frozenset({"b1"}))) == ["a", "b2", "c"]
    assert plan_route(peers, 30, rtt, frozenset({"b1", "b2"})) is None
    assert plan_route(peers[:2], 30, rtt) is None  # blocks 20:30 uncovered


def test_full_model_peer_wins_when_hops_cost_more_than_they_save():
    sharded = [peer("a", 0, 15, 100.0), peer("b", 15, 30, 100.0)]
    whole = peer("w", 0, 30, 60.0)
    rtt = {"a": 0.05, "b": 0.05, "w": 0.05}
    assert names(plan_route([*sharded, whole], 30, rtt)) == ["w"]
    fast = {"a": 0.001, "b": 0.001, "w": 0.05}
    assert names(plan_route([*sharded, whole], 30, fast)) == ["a", "b"]


def test_local_blocks_cost_no_network_hop():
    route = plan_route([peer("remote", 0, 30, 50.0), peer("me", 0, 30, 40.0, local=True)], 30)
    assert names(route) == ["me"]


def test_coverage_and_least_covered_window():
    counts = coverage([peer("a", 0, 10), peer("b", 5, 20)], 30)
    assert counts[:5] == [1] * 5 and counts[5:10] == [2] * 5 and counts[20:] == [0] * 10
    assert least_covered_window(counts, 10) == (20, 30)
    assert least_covered_window([0] * 30, 30) == (0, 30)


def test_greedy_picks_the_argmax_and_repetition_penalty_moves_it():
    logits = torch.tensor([1.0, 3.0, 2.9])
    assert Sampler(SamplingParams()).next_token(logits, []) == 1
    penalised = Sampler(SamplingParams(repetition_penalty=1.5))
    assert penalised.next_token(logits, [1]) == 2


def test_top_k_and_top_p_never_sample_outside_the_nucleus():
    logits = torch.tensor([5.0, 4.0, 0.0, -1.0, -2.0])
    top_k = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=0))
    top_p = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=0))
    assert {top_k.next_token(logits, []) for _ in range(200)} <= {0, 1}
    assert {top_p.next_token(logits, []) for _ in range(200)} == {0}


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(temperature=-1), dict(top_p=0),
                                 dict(top_k=-1), dict(repetition_penalty=0), dict(stop=("",))])
def test_invalid_sampling_params_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def stream_text(text: str, stop: tuple[str, ...]) -> tuple[str, str]:
    tokenizer = byte_tokenizer()
    assembler = TextAssembler(tokenizer, stop)
    streamed = ""
    for token in tokenizer(text)["input_ids"]:
        streamed += assembler.push(token)
        if assembler.stopped:
            break
    return streamed + assembler.finish(), assembler.text


def test_stop_strings_cut_the_text_and_never_leak_into_the_stream():
    assert stream_text("Hello world. Next", (".",)) == ("Hello world", "Hello world")
    assert stream_text("abc STOP def", ("STOP",)) == ("abc ", "abc ")
    assert stream_text("no stop here", ("zzz",)) == ("no stop here", "no stop here")
    assert stream_text("wörld ünïcode", ()) == ("wörld ünïcode", "wörld ünïcode")


@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=4), max_size=3))
def test_streamed_text_always_equals_the_final_text(text, stops):
    streamed, final = stream_text(text, tuple(stops))
    assert streamed == final
    assert not any(s in final for s in stops)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_tensor_wire_roundtrip(dtype):
    tensor = torch.randn(1, 3, 8)
    back = from_wire(to_wire(tensor, dtype))
    assert back.shape == (1, 3, 8)
    assert torch.equal(back, tensor.to(back.dtype))


def test_sliding_window_allows_limit_per_window_per_key():
    from hydra.api.ratelimit import SlidingWindowLimiter

    limiter = SlidingWindowLimiter(limit=3, window=10.0, max_keys=2)
    decisions = [limiter.check("a", now=t) for t in (0.0, 1.0, 2.0, 3.0)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].reset_s == 7  # the hit at t=0 leaves the window at t=10
    assert limiter.check("a", now=10.5).allowed  # slid past the first hit
    assert limiter.check("b", now=10.5).allowed and limiter.check("c", now=10.5).allowed
    assert len(limiter._hits) == 2  # least recently seen key forgotten


def test_a_replayed_history_fits_the_frame_limit():
    """A long prompt then thousands of one-token steps (hidden size 1024): every replay
    message, its ``chunks`` list included, stays under the frame cap. Packed by tensor bytes
    alone, the whole history went into one message a few hundred bytes over the cap, and a
    failover could never succeed."""
    width = 1024
    history = [torch.zeros(1, 4000, width)] + [torch.zeros(1, 1, width)] * 4191
    batches = pack_history(history, "float32")
    packed = [t for batch in batches for t in batch]
    assert len(packed) == len(history) and all(a is b for a, b in zip(packed, history))
    for batch in batches:
        step = inference.Step(position=0, chunks=tuple(t.shape[1] for t in batch),
                              hidden=to_wire(torch.cat(batch, dim=1), "float32"))
        assert len(encode(step)) <= inference.MAX_FRAME
    everything = inference.Step(position=0, chunks=tuple(t.shape[1] for t in history),
                                hidden=to_wire(torch.cat(history, dim=1), "float32"))
    assert len(encode(everything)) > inference.MAX_FRAME  # the case that needed splitting
