"""Which peers serve which blocks of a model, and the fastest chain of them covering all blocks.

A route is a sequence of peers whose spans tile [0, num_layers) end to end; each peer runs its
whole announced span. Among all such chains we pick the one with the least expected time per
token: per hop a fixed serialisation allowance plus the measured round trip, plus the span's
compute time from the throughput the peer announced, each hop's cost scaled up by how far its
reputation falls short (``weights``). It is a shortest path over layer
boundaries (a DAG, since spans go forward), so a full-model peer competes with sharded chains
on the same scale and wins when hops cost more than they save.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hydra.errors import Unavailable
from hydra.runtime.precision import precision
from protocols.inference import Hop
from protocols.records import PeerRecord

HOP_COST_S = 0.002  # serialisation and framing per hop, before the network round trip
DEFAULT_RTT_S = 0.05  # a peer we have not measured
DEFAULT_BLOCK_S = 0.002  # per block and token, for a peer that announces no throughput


class NoRoute(Unavailable):
    """No chain of reachable peers covers the model's blocks (after any failovers)."""


@dataclass(frozen=True)
class Candidate:
    """A peer that can be one hop of a route, and what route planning knows about it. ``hop``
    (who, where, which blocks) is the type the onion headers and the wire carry too."""

    hop: Hop
    throughput: float = 0.0  # tokens/s through the whole span, as announced
    local: bool = False  # this process serves it: no network hop
    kx_key: bytes = b""  # its identity-signed X25519 key (checked again before use)
    kx_signature: bytes = b""
    model_hash: bytes = b""  # of its weights as announced; its commitments must name the same
    dtype: str = ""  # the precision it computes in, as announced (dtype, "+int8" when quantized)

    @property
    def peer_id(self) -> str:
        return self.hop.peer_id

    @classmethod
    def from_record(cls, record: PeerRecord) -> "Candidate":
        hop = Hop(record.peer_id, record.addrs, record.layer_start, record.layer_end)
        return cls(
            hop, record.throughput, kx_key=record.kx_key, kx_signature=record.kx_signature,
            model_hash=record.model_hash, dtype=precision(record.dtype, record.quantization),
        )

    def cost(self, rtt: Mapping[str, float]) -> float:
        blocks = self.hop.layer_end - self.hop.layer_start
        compute = 1.0 / self.throughput if self.throughput > 0 else DEFAULT_BLOCK_S * blocks
        if self.local:
            return compute
        return HOP_COST_S + rtt.get(self.peer_id, DEFAULT_RTT_S) + compute


def candidates_for(
    records: Iterable[PeerRecord], model: str, num_layers: int
) -> list[Candidate]:
    """Peers announcing blocks of ``model`` with the layer count we know it has."""
    return [
        Candidate.from_record(r)
        for r in records
        if r.model == model and r.total_layers == num_layers and r.layer_end <= num_layers
    ]


def coverage(candidates: Iterable[Candidate], num_layers: int) -> list[int]:
    """How many peers serve each block."""
    counts = [0] * num_layers
    for c in candidates:
        for layer in range(c.hop.layer_start, min(c.hop.layer_end, num_layers)):
            counts[layer] += 1
    return counts


def plan_route(
    candidates: Iterable[Candidate],
    num_layers: int,
    rtt: Mapping[str, float] | None = None,
    exclude: frozenset[str] = frozenset(),
    first: int = 0,
    weights: Mapping[str, float] | None = None,
) -> list[Candidate] | None:
    """The cheapest chain covering [first, num_layers), or None when the blocks are not
    covered (``first`` > 0 when the coordinator runs the first blocks itself). ``weights``:
    a cost multiplier per peer (1 when absent)."""
    rtt = rtt or {}
    weights = weights or {}
    by_start: dict[int, list[Candidate]] = {}
    for c in candidates:
        if c.peer_id not in exclude and first <= c.hop.layer_start < c.hop.layer_end <= num_layers:
            by_start.setdefault(c.hop.layer_start, []).append(c)
    best: dict[int, tuple[float, list[Candidate]]] = {first: (0.0, [])}
    for boundary in range(first, num_layers):  # spans only go forward: one pass suffices
        if boundary not in best:
            continue
        cost, chain = best[boundary]
        for c in sorted(by_start.get(boundary, []), key=lambda c: c.peer_id):
            total = cost + c.cost(rtt) * weights.get(c.peer_id, 1.0)
            end = c.hop.layer_end
            if end not in best or total < best[end][0]:
                best[end] = (total, [*chain, c])
    return best[num_layers][1] if num_layers in best else None
