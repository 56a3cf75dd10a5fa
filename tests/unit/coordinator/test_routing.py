"""hydra.coordinator.routing: the cheapest chain of peers covering a model's blocks, and coverage."""

from hydra.coordinator.routing import Candidate, coverage, plan_route
from hydra.stage.placement import least_covered_window
from protocols import inference


def peer(name: str, start: int, end: int, throughput: float = 0.0, **kw) -> Candidate:
    hop = inference.Hop(name, (f"/ip4/127.0.0.1/tcp/1/p2p/{name}",), start, end)
    return Candidate(hop, throughput, **kw)


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
