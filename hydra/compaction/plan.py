"""What a coordinator asks of KV compaction: plain data (no torch), from ``--kv-compaction-*``
or a request, and the per-block budgets file of phase 3.

Modes: ``off`` never compacts; ``on`` compacts the prompt by ``ratio`` once it is prefilled,
and (phase 4) again whenever the route's cache is full; ``auto`` opens sessions exactly as
without compaction and only when a stage has no cache room for one does it open it compacting,
then compacts whenever the route's cache is full. Phases: 1 keeps the selected keys as they
are; 2 adds per-key biases and refitted values; 3 adds per-block (and per-head) budgets from a
JSON file; 4 compacts online, as often as a session needs, where 1 to 3 compact once.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hydra.errors import ConfigError
from protocols.inference import MAX_KV_HEADS, SELECTIONS, Compaction

MODES = ("off", "on", "auto")
MAX_RATIO = 64.0


@dataclass(frozen=True)
class CompactionPlan:
    mode: str = "auto"
    ratio: float = 4.0  # cached entries before a compaction / after it
    phase: int = 4
    selection: str = "attention"
    # phase 3: block index (of the whole model) -> the share of a compaction's target its KV
    # heads keep, one for all or one per head; blocks not named keep the whole target
    shares: Mapping[int, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--kv-compaction-mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not (math.isfinite(self.ratio) and 1.0 < self.ratio <= MAX_RATIO):
            raise ConfigError(f"--kv-compaction-ratio must be in (1, {MAX_RATIO:g}], not {self.ratio}")
        if self.phase not in (1, 2, 3, 4):
            raise ConfigError(f"--kv-compaction-phase must be 1, 2, 3 or 4, not {self.phase}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"compaction selection must be one of {', '.join(SELECTIONS)}")

    @property
    def online(self) -> bool:
        """Whether a session is compacted as often as it fills its cache (phase 4), or once."""
        return self.phase >= 4

    def for_span(self, start: int, end: int) -> Compaction:
        """The header's terms for a stage serving blocks [start, end)."""
        shares: tuple[tuple[float, ...], ...] = ()
        if self.phase >= 3 and self.shares and end > start:
            shares = tuple(self.shares.get(block, (1.0,)) for block in range(start, end))
        return Compaction(refit=self.phase >= 2, selection=self.selection, shares=shares)


def load_budgets(path: Path) -> dict[int, tuple[float, ...]]:
    """A budgets file: ``{"<block>": share, "<block>": [share per KV head], ...}``, shares
    relative to each other (the largest keeps a compaction's whole target; others keep their
    proportion of it). Blocks are counted over the whole model, from 0."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--kv-compaction-budgets {path}: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"--kv-compaction-budgets {path}: expected an object of block -> share(s)")
    budgets: dict[int, tuple[float, ...]] = {}
    for block, value in raw.items():
        shares = value if isinstance(value, list) else [value]
        if not (str(block).isdigit() and 0 < len(shares) <= MAX_KV_HEADS and all(map(_share, shares))):
            raise ConfigError(f"--kv-compaction-budgets {path}: block {block!r} needs positive share(s)")
        budgets[int(block)] = tuple(float(s) for s in shares)
    largest = max(max(shares) for shares in budgets.values())
    return {block: tuple(s / largest for s in shares) for block, shares in budgets.items()}


def _share(value: object) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0  # type: ignore[arg-type, operator]
