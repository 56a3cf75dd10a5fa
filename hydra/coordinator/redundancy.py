"""Tier 2, redundant execution: ``--redundancy N`` runs every step on N routes, their peers
disjoint as far as the swarm allows, and takes the majority output.

Outputs are compared with the verification tolerances of their precision class. The routes
that dissent from the majority (all of them, when there is none) have that step's every stage
audited: the recompute (tier 1's challenge and a verifier outside every route) decides who
lied. Agreement suppresses nothing: tier-1 audits keep running on every route, with
verifiers on none of them (tier 3), so a colluding pair that agrees on a wrong answer is
still caught.
"""

import logging
from dataclasses import dataclass, field

import torch
import trio

from hydra.coordinator.pipeline import Pipeline, PipelineConfig
from hydra.coordinator.routing import Candidate, NoRoute
from hydra.models.catalog import ModelSpec
from hydra.verification.compare import STRICT, Tolerance, compare, tolerance_for

log = logging.getLogger(__name__)


@dataclass(eq=False)
class RedundantPipeline:
    """N pipelines stepped together; quacks like the first one (the primary) otherwise."""

    members: list[Pipeline]
    spec: ModelSpec
    tolerance: Tolerance = STRICT  # set once the routes are open, from their peers' precisions
    dissents: int = 0  # steps on which some route disagreed with the majority
    _open: list[Pipeline] = field(default_factory=list)

    async def __aenter__(self) -> "RedundantPipeline":
        taken: set[str] = set()
        try:
            for member in self.members:
                member.excluded.update(dict.fromkeys(taken, "on another redundant route"))
                try:
                    await member.__aenter__()
                except NoRoute as exc:
                    if not self._open:
                        raise
                    log.info("redundancy: no disjoint route for copy %d (%s)", len(self._open) + 1, exc)
                    continue
                self._open.append(member)
                taken.update(c.peer_id for c in member.route)
        except BaseException:
            await self._close(None)
            raise
        everyone = frozenset(taken)
        for member in self._open:
            member.companions = everyone
        dtypes = [c.dtype or member.config.dtype for member in self._open for c in member.route]
        self.tolerance = tolerance_for(self.primary.config.dtype, *dtypes, mixed=self.spec.mixed_precision)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await self._close(exc_type)

    async def _close(self, exc_type: type[BaseException] | None) -> None:
        for member in self._open:
            await member.__aexit__(exc_type, None, None)
        self._open = []

    @property
    def primary(self) -> Pipeline:
        return self._open[0] if self._open else self.members[0]

    @property
    def config(self) -> PipelineConfig:
        return self.primary.config

    @property
    def position(self) -> int:
        return self.primary.position

    @property
    def route(self) -> list[Candidate]:
        return self.primary.route

    @property
    def failovers(self) -> int:
        return sum(m.failovers for m in self._open)

    @property
    def hop_seconds(self) -> list[float]:
        return self.primary.hop_seconds

    @property
    def commitment_bytes(self) -> int:
        return sum(m.commitment_bytes for m in self._open)

    async def forward(self, hidden: torch.Tensor, return_all: bool = False) -> torch.Tensor:
        position = self.position
        outputs: dict[int, torch.Tensor] = {}

        async def run(index: int, member: Pipeline) -> None:
            try:
                outputs[index] = await member.forward(hidden, return_all)
            except NoRoute as exc:
                log.warning("redundancy: a copy gave up (%s)", exc)

        async with trio.open_nursery() as nursery:
            for index, member in enumerate(self._open):
                nursery.start_soon(run, index, member)
        if not outputs:
            raise NoRoute("every redundant route failed")
        winners = self._majority(outputs)
        for index, member in enumerate(self._open):
            if index in outputs and index not in winners:
                self.dissents += 1
                member.pending_audits.extend((stage, position) for stage in range(len(member.route)))
        self._open = [m for i, m in enumerate(self._open) if i in outputs]
        return outputs[min(winners or outputs)]

    def _majority(self, outputs: dict[int, torch.Tensor]) -> set[int]:
        """The indices of the largest group of agreeing outputs; when no group holds a
        majority, every copy dissents and the primary's output is used meanwhile."""
        groups: list[list[int]] = []
        for index, output in sorted(outputs.items()):
            for group in groups:
                if compare(output, outputs[group[0]], self.tolerance, self.spec.massive_channels).passed:
                    group.append(index)
                    break
            else:
                groups.append([index])
        best = max(groups, key=len)
        if 2 * len(best) > len(outputs):
            return set(best)
        log.warning("redundancy: no majority among %d outputs", len(outputs))
        return set()
