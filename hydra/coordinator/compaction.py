"""When a pipeline tells its stages to compact their KV caches, and to how many entries.

The coordinator decides, not each stage: every stage of a route compacts at the same steps,
and the orders are part of the history a failover replays, so a replacement stage rebuilds
the very cache the lost one had (the same inputs, the same orders, the same query samples:
``hydra.compaction.cache``). The stages grant the route a number of cache entries when the
session opens (``SessionOpened.cache_tokens``); the schedule keeps the route within it.
"""

import math
from dataclasses import dataclass

from hydra.compaction.plan import CompactionPlan
from hydra.errors import InvalidRequest


class CacheFull(InvalidRequest):
    """The session's cache is full and may not be compacted again (phases 1 to 3), or a step
    would not fit even after compacting."""


@dataclass
class CacheSchedule:
    plan: CompactionPlan
    granted: int = 0  # cache entries per attention block the route holds (0: what max_length needs)
    entries: int = 0  # entries the stages' caches hold now (the longest block)
    compactions: int = 0
    prompted: bool = False  # the prompt has been sent: ``on`` compacts it before the next step

    def step_limit(self) -> int | None:
        """The most tokens one step may carry so that a compaction always makes room for it."""
        if not self.granted:
            return None
        return max(1, self.granted - math.ceil(self.granted / self.plan.ratio))

    def order(self, tokens: int) -> int:
        """The compaction target to send with a step of ``tokens`` (0: none)."""
        full = bool(self.granted) and self.entries + tokens > self.granted
        prompt = self.plan.mode == "on" and self.prompted and not self.compactions
        if not (full or prompt):
            return 0
        if self.compactions and not self.plan.online:
            raise CacheFull(f"the session's cache ({self.granted} entries) is full; phase "
                            f"{self.plan.phase} compacts once (phase 4: as often as needed)")
        target = max(1, math.floor(self.entries / self.plan.ratio))
        if self.granted and target + tokens > self.granted:
            raise CacheFull(f"a step of {tokens} tokens does not fit a cache of {self.granted} entries")
        return target

    def sent(self, tokens: int, target: int) -> None:
        """A step of ``tokens`` went through, after compacting to ``target`` (0: none)."""
        if target:
            self.entries = min(self.entries, target)
            self.compactions += 1
        self.entries += tokens

    def room(self) -> int | None:
        """Tokens the session can still take (None: as many as its max_length allows)."""
        if not self.granted or self.plan.online or not self.compactions:
            return None
        return self.granted - self.entries
