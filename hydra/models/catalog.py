"""The model catalog: ``models.catalog.json`` at the repository root (``$HYDRA_CATALOG``
overrides), parsed once into typed entries."""

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "models.catalog.json"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    hub_id: str
    architecture: str
    num_layers: int
    memory_per_shard_gb: float
    recommended_quantization: str
    peers_needed: int
    quality_tier: str
    aliases: tuple[str, ...] = ()
    draft_model: str | None = None


@dataclass(frozen=True)
class Catalog:
    default: str
    models: tuple[ModelSpec, ...]

    def resolve(self, name: str) -> ModelSpec:
        """The entry whose id or alias is ``name`` (case-insensitive); KeyError lists choices."""
        wanted = name.lower()
        for spec in self.models:
            if wanted == spec.id or wanted in spec.aliases:
                return spec
        known = ", ".join(s.id for s in self.models)
        raise KeyError(f"unknown model {name!r}; the catalog has: {known}")


@cache
def load_catalog(path: Path | None = None) -> Catalog:
    path = path or Path(os.environ.get("HYDRA_CATALOG", DEFAULT_PATH))
    data = json.loads(path.read_text())
    fields = ModelSpec.__dataclass_fields__
    models = tuple(
        ModelSpec(**{k: tuple(v) if k == "aliases" else v for k, v in m.items() if k in fields})
        for m in data["models"]
    )
    return Catalog(default=data["default"], models=models)
