"""Which blocks a node serves when the user does not say: the whole model when memory allows,
otherwise the window of blocks the swarm covers least (as Petals' servers do)."""

from hydra.errors import ConfigError
from hydra.models.catalog import ModelSpec

MEMORY_SHARE = 0.6  # of the memory available now, what a node may fill with blocks


def blocks_that_fit(spec: ModelSpec, memory_gb: float | None) -> int:
    if memory_gb is None:
        return spec.num_layers
    whole_model_gb = spec.memory_per_shard_gb * spec.peers_needed
    per_block_gb = whole_model_gb / spec.num_layers
    return max(1, min(spec.num_layers, int(memory_gb * MEMORY_SHARE / per_block_gb)))


def least_covered_window(coverage: list[int], size: int) -> tuple[int, int]:
    """The ``size``-block window with the lowest total coverage (earliest on ties)."""
    size = min(size, len(coverage))
    best_start = min(
        range(len(coverage) - size + 1), key=lambda start: sum(coverage[start : start + size])
    )
    return best_start, best_start + size


def shard_layers(index: int, total: int, num_layers: int) -> tuple[int, int]:
    """Layers of shard ``index`` of ``total`` equal shards (earlier shards take the remainder)."""
    if not 0 <= index < total or total > num_layers:
        raise ConfigError(f"shard {index} of {total} is impossible for {num_layers} layers")
    base, extra = divmod(num_layers, total)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)
