"""Each node's opinion of the peers it has used, persisted in SQLite (sqlite-utils).

Score = 40% verification + 25% uptime + 20% latency consistency + 15% stake, each in [0, 1]:
- verification: (passed + 1) / (passed + 1 + FAIL_WEIGHT * failed): one proven failure sinks
  a peer below the routing threshold whatever its history;
- uptime: (reached + 1) / (reached + unreachable + 1);
- latency consistency: 1 / (1 + coefficient of variation of its measured round trips);
- stake: staked / (staked + STAKE_HALF) of the HYDRA the peer has staked in the token log
  (``stake_of``), so a peer with stake is preferred by routing over an equal one without.
Counts decay with age (half-life ``half_life_s``), so an old failure fades and a peer that
stopped misbehaving is readmitted eventually. Evidence of every failed check is kept for
slashing. State lives in memory and is written through on every change (a few small rows).
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

REPUTATION_FILE = "reputation.db"  # in the node's home
WEIGHTS = {"verification": 0.40, "uptime": 0.25, "latency": 0.20, "stake": 0.15}
FAIL_WEIGHT = 1000.0
NEUTRAL = 1.0 - WEIGHTS["stake"]  # a peer nobody has anything against, and no stake
STAKE_HALF = 10_000_000  # micro-HYDRA (10 HYDRA, what 10,000 tokens served mint): half the stake term
COUNTERS = ("passed", "failed", "reached", "unreachable")


@dataclass
class PeerStats:
    peer_id: str
    passed: float = 0.0
    failed: float = 0.0
    reached: float = 0.0
    unreachable: float = 0.0
    latency_n: float = 0.0
    latency_mean: float = 0.0
    latency_m2: float = 0.0  # sum of squared deviations (Welford), decayed with the counts
    updated_at: float = 0.0

    def decay(self, now: float, half_life: float) -> None:
        factor = 0.5 ** (max(0.0, now - self.updated_at) / half_life) if self.updated_at else 1.0
        for name in (*COUNTERS, "latency_n", "latency_m2"):
            setattr(self, name, getattr(self, name) * factor)
        self.updated_at = now


@dataclass(frozen=True)
class Score:
    peer_id: str
    total: float
    verification: float
    uptime: float
    latency: float
    stake: float
    checks_passed: float
    checks_failed: float

    @classmethod
    def of(cls, stats: PeerStats, staked: int = 0) -> "Score":
        verification = (stats.passed + 1) / (stats.passed + 1 + FAIL_WEIGHT * stats.failed)
        uptime = (stats.reached + 1) / (stats.reached + stats.unreachable + 1)
        latency = 1.0
        if stats.latency_n >= 1.5 and stats.latency_mean > 0:  # two samples, however decayed
            latency = 1 / (1 + math.sqrt(stats.latency_m2 / stats.latency_n) / stats.latency_mean)
        parts = {
            "verification": verification,
            "uptime": uptime,
            "latency": latency,
            "stake": staked / (staked + STAKE_HALF),
        }
        total = sum(WEIGHTS[k] * v for k, v in parts.items())
        return cls(stats.peer_id, total, **parts, checks_passed=stats.passed, checks_failed=stats.failed)


class Reputation:
    """Open with a path (``$HYDRA_HOME/reputation.db``) or None for an in-memory store."""

    def __init__(
        self,
        path: Path | None = None,
        half_life_s: float = 86400.0,
        stake_of: Callable[[str], int] = lambda peer_id: 0,
    ) -> None:
        self.stake_of = stake_of
        self.db = sqlite_utils.Database(path) if path is not None else sqlite_utils.Database(memory=True)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.half_life_s = half_life_s
        self._peers = self.db.table("peers")
        self._evidence = self.db.table("evidence")
        if not self._peers.exists():
            self._peers.create(
                {f: float for f in PeerStats.__dataclass_fields__} | {"peer_id": str}, pk="peer_id"
            )
        if not self._evidence.exists():
            self._evidence.create(
                {"id": int, "peer_id": str, "at": float, "kind": str, "detail": str, "blob": bytes}, pk="id"
            )
            self._evidence.create_index(["peer_id"])
        self.stats = {row["peer_id"]: PeerStats(**row) for row in self._peers.rows}

    def _touch(self, peer_id: str) -> PeerStats:
        stats = self.stats.setdefault(peer_id, PeerStats(peer_id))
        stats.decay(time.time(), self.half_life_s)
        return stats

    def _save(self, stats: PeerStats) -> None:
        self._peers.upsert(asdict(stats), pk="peer_id")

    def score(self, peer_id: str) -> Score:
        stats = self.stats.get(peer_id)
        if stats is None:
            return Score.of(PeerStats(peer_id), self.stake_of(peer_id))
        stats.decay(time.time(), self.half_life_s)
        return Score.of(stats, self.stake_of(peer_id))

    def record_check(self, peer_id: str, passed: bool) -> None:
        self._count(peer_id, "passed" if passed else "failed")

    def record_contact(self, peer_id: str, reached: bool) -> None:
        self._count(peer_id, "reached" if reached else "unreachable")

    def _count(self, peer_id: str, counter: str) -> None:
        stats = self._touch(peer_id)
        setattr(stats, counter, getattr(stats, counter) + 1)
        self._save(stats)

    def record_latency(self, peer_id: str, seconds: float) -> None:
        stats = self._touch(peer_id)
        stats.latency_n += 1
        delta = seconds - stats.latency_mean
        stats.latency_mean += delta / stats.latency_n
        stats.latency_m2 += delta * (seconds - stats.latency_mean)
        self._save(stats)

    def record_evidence(self, peer_id: str, kind: str, detail: dict[str, Any], blob: bytes) -> None:
        """Keep what proves a failed check (signed commitments, revealed tensors, the verdict)."""
        self._evidence.insert(
            {"peer_id": peer_id, "at": time.time(), "kind": kind, "detail": json.dumps(detail), "blob": blob}
        )

    def evidence(self, peer_id: str) -> list[dict[str, Any]]:
        return list(self._evidence.rows_where("peer_id = ?", [peer_id], order_by="id"))

    def table(self) -> list[Score]:
        """Every peer this node has an opinion of, best first."""
        return sorted((self.score(p) for p in self.stats), key=lambda s: -s.total)
