"""Read only the tensors a peer needs from a safetensors checkpoint (single file or sharded)."""

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from hydra.errors import ConfigError

_LAYER_KEY = re.compile(r"^(?P<prefix>.*?)layers\.(?P<index>\d+)\.")


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        index = path / "model.safetensors.index.json"
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        else:
            weight_map = {}
            for file in sorted(path.glob("*.safetensors")):
                with safe_open(file, "pt") as handle:
                    weight_map.update(dict.fromkeys(handle.keys(), file.name))
        self.files = weight_map
        self.prefix = self._text_model_prefix()

    def _text_model_prefix(self) -> str:
        """``model.`` for Llama-style checkpoints, ``model.language_model.`` for Qwen3.5's
        multimodal ones: whatever precedes ``layers.N.``, ignoring vision towers."""
        for key in self.files:
            match = _LAYER_KEY.match(key)
            if match and "visual" not in key and "vision" not in key:
                return match["prefix"]
        raise ConfigError(f"{self.path}: no transformer layers found in the checkpoint")

    def has(self, key: str) -> bool:
        return key in self.files

    def load(self, keys: Iterable[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        by_file: dict[str, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.files[key], []).append(key)
        tensors = {}
        for file, names in by_file.items():
            with safe_open(self.path / file, "pt") as handle:
                for name in names:
                    tensors[name] = handle.get_tensor(name).to(dtype)
        return tensors

    def layer_tensors(self, start: int, end: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Tensors of blocks [start, end), renamed to ``layers.<i - start>.…``."""
        wanted: dict[str, str] = {}
        for key in self.files:
            match = _LAYER_KEY.match(key)
            if match and match["prefix"] == self.prefix and start <= int(match["index"]) < end:
                local = int(match["index"]) - start
                wanted[key] = f"layers.{local}.{key[match.end():]}"
        loaded = self.load(wanted, dtype)
        return {wanted[key]: tensor for key, tensor in loaded.items()}
