"""Which model and blocks a node serves when the user does not say: the whole model when
memory allows, otherwise the window of blocks the swarm covers least (as Petals' servers do);
and which larger catalog models a node could move to (``hydra.promotion``)."""

from collections.abc import Callable, Iterable

from hydra.errors import ConfigError
from hydra.models.catalog import ModelSpec

MEMORY_SHARE = 0.6  # of the memory available now, what a node may fill with blocks


def block_gb(spec: ModelSpec) -> float:
    """One block's weights, from the catalog's memory figures."""
    return spec.memory_per_shard_gb * spec.peers_needed / spec.num_layers


def blocks_that_fit(spec: ModelSpec, memory_gb: float | None) -> int:
    if memory_gb is None:
        return spec.num_layers
    return max(1, min(spec.num_layers, int(memory_gb * MEMORY_SHARE / block_gb(spec))))


def larger_models(
    models: Iterable[ModelSpec], current: ModelSpec, memory_gb: float | None,
    obtainable: Callable[[ModelSpec], bool],
) -> list[ModelSpec]:
    """Catalog models larger than ``current`` that this machine can serve a block of and
    whose weights it can get, largest first: what a node may be promoted to."""
    fits = [
        spec for spec in models
        if spec.parameters > current.parameters
        and (memory_gb is None or memory_gb * MEMORY_SHARE >= block_gb(spec))
        and obtainable(spec)
    ]
    return sorted(fits, key=lambda spec: spec.parameters, reverse=True)


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
