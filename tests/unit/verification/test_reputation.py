"""Reputation: the weights, one failure excluding a peer, decay readmitting it, persistence."""

import time
from pathlib import Path

import pytest

from hydra.verification.reputation import NEUTRAL, Reputation


def test_a_new_peer_is_neutral_and_one_failed_check_drops_it_below_the_threshold() -> None:
    reputation = Reputation()
    assert reputation.score("p").total == pytest.approx(NEUTRAL)
    for _ in range(100):
        reputation.record_check("p", True)
    reputation.record_check("p", False)
    score = reputation.score("p")
    assert score.total < 0.5 and score.checks_failed == pytest.approx(1) and score.stake == 0.0


def test_uptime_and_latency_consistency_weigh_in() -> None:
    reputation = Reputation()
    reputation.record_contact("flaky", False)
    for seconds in (0.001, 0.02, 0.001, 0.03):
        reputation.record_latency("jittery", seconds)
    for _ in range(4):
        reputation.record_latency("steady", 0.01)
    assert reputation.score("flaky").uptime == pytest.approx(0.5)
    assert reputation.score("jittery").latency < reputation.score("steady").latency == 1.0
    assert reputation.table()[0].peer_id == "steady"


def test_failures_fade_with_age() -> None:
    reputation = Reputation(half_life_s=0.05)
    reputation.record_check("p", False)
    assert reputation.score("p").total < 0.5
    time.sleep(0.6)  # twelve half-lives
    assert reputation.score("p").total > 0.5


def test_scores_and_evidence_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "reputation.db"
    first = Reputation(path)
    first.record_check("p", False)
    first.record_evidence("p", "recompute", {"verdict": "relative L2 0.3 > 0.0001"}, b"\x01\x02")
    first.db.close()
    again = Reputation(path)
    assert again.score("p").checks_failed > 0.99
    [row] = again.evidence("p")
    assert row["kind"] == "recompute" and row["blob"] == b"\x01\x02"
