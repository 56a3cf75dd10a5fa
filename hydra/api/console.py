"""The web console every node serves at ``/``: this node, the swarm's coverage, the routes of
live generations, earnings, and a chat panel over the node's own OpenAI endpoint. A signpost
serves the same page with its own facts and the swarm only. The page's files ship in the
package (no CDN: it works offline) and it follows one stream of server-sent events, a
snapshot a second."""

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import trio
from quart import Blueprint, Response, send_from_directory

from hydra.coordinator.generation import Coordinator
from hydra.coordinator.routing import candidates_for, coverage
from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import SWARM_KEY
from hydra.models.catalog import Catalog
from protocols.records import PeerRecord

FILES = Path(__file__).with_name("console")
EVENT_EVERY_S = 1.0
SWARM_FRESH_S = 2.0  # one DHT lookup serves every open console this long


class ConsoleView:
    """What the console shows, assembled per snapshot; the swarm part is looked up in the DHT
    at most every ``SWARM_FRESH_S`` however many consoles are open."""

    def __init__(
        self, dht: Dht, status: Callable[[], dict[str, Any]], catalog: Catalog,
        coordinator: Coordinator | None = None,  # None: a signpost, which routes nothing
    ) -> None:
        self.dht, self.status, self.catalog, self.coordinator = dht, status, catalog, coordinator
        self._swarm: tuple[float, dict[str, Any]] | None = None

    async def snapshot(self) -> dict[str, Any]:
        return {"node": self.status(), "swarm": await self.swarm(), "default_model": self.catalog.default}

    async def swarm(self) -> dict[str, Any]:
        if self._swarm is None or time.monotonic() - self._swarm[0] > SWARM_FRESH_S:
            records = [entry.record for entry in await self.dht.get(SWARM_KEY)]
            self._swarm = (time.monotonic(), self.swarm_of(records))
        return self._swarm[1]

    def swarm_of(self, records: list[PeerRecord]) -> dict[str, Any]:
        """Peers and per-model coverage; a node's own model is listed even when nobody (the
        node included) has announced it yet, so its gaps show. Reputation is a node's own
        score of each peer; a signpost scores nobody."""
        coordinator = self.coordinator

        def reputation(peer_id: str) -> float | None:
            return round(coordinator.reputation.score(peer_id).total, 3) if coordinator else None

        peers = [
            {
                "peer_id": r.peer_id,
                "model": r.model,
                "layers": [r.layer_start, r.layer_end],
                "throughput": round(r.throughput, 1),
                "region": r.region,
                "reputation": reputation(r.peer_id),
            }
            for r in sorted(records, key=lambda r: (r.model, r.layer_start, r.peer_id))
        ]
        own = set()
        if coordinator is not None:
            own.add(coordinator.local.model_id if coordinator.local is not None else self.catalog.default)
        return {"peers": peers, "models": model_coverage(records, self.catalog, own)}


def model_coverage(records: Iterable[PeerRecord], catalog: Catalog, always: set[str]) -> list[dict[str, Any]]:
    """Per catalog model announced (or in ``always``): how many peers serve each block, and
    the block ranges nobody serves."""
    records = list(records)
    shown = {r.model for r in records} | always
    models = []
    for spec in catalog.models:
        if spec.id not in shown:
            continue
        counts = coverage(candidates_for(records, spec.id, spec.num_layers), spec.num_layers)
        models.append({"id": spec.id, "num_layers": spec.num_layers, "coverage": counts,
                       "gaps": gaps(counts), "complete": all(counts)})
    return models


def gaps(counts: list[int]) -> list[list[int]]:
    """``[start, end)`` ranges of blocks no peer serves."""
    found: list[list[int]] = []
    for layer, count in enumerate(counts):
        if count:
            continue
        if found and found[-1][1] == layer:
            found[-1][1] = layer + 1
        else:
            found.append([layer, layer + 1])
    return found


def console_blueprint(view: ConsoleView) -> Blueprint:
    bp = Blueprint("console", __name__, static_folder=str(FILES), static_url_path="/console")

    @bp.get("/")
    async def index() -> Any:
        return await send_from_directory(FILES, "index.html")

    @bp.get("/console/state")
    async def state() -> Any:
        return await view.snapshot()

    @bp.get("/console/events")
    async def events() -> Any:
        async def stream() -> AsyncIterator[bytes]:
            while True:
                yield f"data: {json.dumps(await view.snapshot())}\n\n".encode()
                await trio.sleep(EVENT_EVERY_S)

        response = Response(stream(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.timeout = None
        return response

    return bp
