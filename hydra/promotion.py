"""Auto-promotion: a node that chose its model itself moves to a larger catalog model when
this machine can serve blocks of it, its weights are here (``weights_here``: no surprise
multi-GB download), and the swarm has no peer for some of its blocks. A gap must show at
``STEADY_CHECKS`` checks in a row, so a peer restarting is not one. With ``--no-promote`` the
node only says it could. The same rule picks the model a node starts with."""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from hydra.coordinator.routing import candidates_for, coverage
from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import model_key
from hydra.models.catalog import Catalog, ModelSpec
from hydra.runtime.sources import weights_here
from hydra.stage.placement import larger_models

log = logging.getLogger(__name__)

STEADY_CHECKS = 2


async def coverage_of(dht: Dht, spec: ModelSpec) -> list[int]:
    """How many peers the DHT knows for each block of ``spec``."""
    entries = await dht.get(model_key(spec.id))
    return coverage(candidates_for((e.record for e in entries), spec.id, spec.num_layers), spec.num_layers)


async def uncovered_larger_model(
    dht: Dht, catalog: Catalog, current: ModelSpec, memory_gb: float | None
) -> ModelSpec | None:
    """The largest catalog model above ``current`` this machine could serve and the swarm
    has no peer for some block of."""
    # off the event loop: whether weights are here is read from the disk
    larger = await trio.to_thread.run_sync(larger_models, catalog.models, current, memory_gb, weights_here)
    for spec in larger:
        if 0 in await coverage_of(dht, spec):
            return spec
    return None


class Promoter:
    """Checks every ``every`` seconds; ``move`` switches the node to a model (loading its
    blocks, then serving and announcing them)."""

    def __init__(
        self,
        dht: Dht,
        catalog: Catalog,
        current: Callable[[], ModelSpec],
        memory_gb: Callable[[], Awaitable[float | None]],
        move: Callable[[ModelSpec], Awaitable[None]],
        every: float,
        enabled: bool = True,
    ) -> None:
        self.dht, self.catalog, self.current, self.memory_gb = dht, catalog, current, memory_gb
        self.move, self.every, self.enabled = move, every, enabled
        self.could: str | None = None  # with --no-promote: the model this node could move to
        self.moves: list[dict[str, Any]] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        seen: ModelSpec | None = None
        streak = 0
        while True:
            await trio.sleep(self.every)
            memory = await self.memory_gb()
            target = await uncovered_larger_model(self.dht, self.catalog, self.current(), memory)
            streak = streak + 1 if target is not None and target == seen else int(target is not None)
            seen = target
            if target is None:
                self.could = None
            elif streak >= STEADY_CHECKS:
                await self.act(target)
                seen, streak = None, 0

    async def act(self, target: ModelSpec) -> None:
        current = self.current()
        if not self.enabled:
            if self.could != target.id:
                log.info("could move from %s to %s, which the swarm lacks peers for (--no-promote: staying)",
                         current.id, target.id)
            self.could = target.id
            return
        log.info("promoting from %s to %s: this machine can serve it and the swarm lacks peers for it",
                 current.id, target.id)
        await self.move(target)
        self.moves.append({"from": current.id, "to": target.id, "at": time.time()})

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "could": self.could, "moves": self.moves}
