"""Where a model's weights come from, turned into one local safetensors checkpoint directory.

Three sources, tried in this order for a catalog entry:
 - a local directory (``--model-path`` or a catalog ``id`` resolved by the caller to a path);
 - a model shipped inside an installed Python package (the embedded SmolLM2 GGUF), converted
   once into the shared cache, with progress on stderr;
 - the Hugging Face hub (``hub_id``), downloaded with ``huggingface_hub`` when the hub is
   reachable.

The cache (``$HYDRA_CACHE`` or ``~/.cache/openhydra``) is shared by every node on the machine,
so several local nodes convert the embedded model once; a file lock serialises conversions
and a directory rename makes a finished checkpoint appear atomically.
"""

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.errors import Unavailable
from hydra.models.catalog import ModelSpec, PackagedWeights

log = logging.getLogger(__name__)

CHECKPOINT_MARKER = "config.json"
GGUF_SOURCE = "gguf_source.json"  # in a checkpoint converted from a GGUF: {"file": its path}


class ModelSourceError(Unavailable):
    """No source could provide the weights; the message says what to install or pass."""


def cache_root() -> Path:
    return Path(os.environ.get("HYDRA_CACHE") or Path.home() / ".cache" / "openhydra")


def is_checkpoint(path: Path) -> bool:
    return (path / CHECKPOINT_MARKER).is_file() and any(path.glob("*.safetensors"))


def resolve_checkpoint(spec: ModelSpec, local_path: Path | None = None) -> Path:
    """A directory holding ``config.json``, tokenizer files and safetensors for ``spec``."""
    if local_path is not None:
        if not is_checkpoint(local_path):
            raise ModelSourceError(f"{local_path} has no config.json and *.safetensors")
        return local_path
    target = cache_root() / "models" / spec.id
    packaged = package_dir(spec.package) if spec.package is not None else None
    if is_checkpoint(target) and (packaged is None or gguf_of(target) is not None):
        return target
    if spec.package is not None and packaged is not None:
        with _locked(target):
            if not is_checkpoint(target):
                convert_packaged_gguf(spec.package, target)
            remember_gguf(target, packaged / spec.package.file)  # also for caches from before
        return target
    if spec.hub_id:
        return download_from_hub(spec.hub_id, target)
    raise ModelSourceError(f"no source for {spec.id}")


def weights_here(spec: ModelSpec) -> bool:
    """Whether ``spec``'s weights are on this machine (converted in the cache, or in an
    installed package), so a node can move to it without a hub download."""
    if is_checkpoint(cache_root() / "models" / spec.id):
        return True
    return spec.package is not None and package_dir(spec.package) is not None


def remember_gguf(checkpoint: Path, gguf: Path) -> None:
    """Note the GGUF a checkpoint was converted from: int4 stages read its 4-bit codes."""
    (checkpoint / GGUF_SOURCE).write_text(json.dumps({"file": str(gguf)}))


def gguf_of(checkpoint: Path) -> Path | None:
    """The GGUF ``checkpoint`` was converted from, if it says so and the file is there."""
    try:
        path = Path(json.loads((checkpoint / GGUF_SOURCE).read_text())["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_file() else None


def package_dir(package: PackagedWeights) -> Path | None:
    """The installed package's directory, found without importing it (its ``__init__`` may
    need dependencies we deliberately do not install)."""
    found = importlib.util.find_spec(package.module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations)))
    return path if (path / package.file).is_file() else None


def convert_packaged_gguf(package: PackagedWeights, target: Path) -> None:
    """Dequantize the packaged GGUF once into an fp32 safetensors checkpoint (loads in ~1 s
    afterwards instead of ~15 s)."""
    _progress(f"converting the embedded model {package.file}: one time, 20-45 s on 2 cores")
    started = time.monotonic()
    with _heartbeat(started):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        source = package_dir(package)
        assert source is not None
        _progress("step 1/3: reading its tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=package.file)
        _progress("step 2/3: dequantizing its weights to float32")
        # GgufConfig(dequantize=True): without it transformers may try to fetch GGUF kernels.
        loaded = AutoModelForCausalLM.from_pretrained(
            source,
            gguf_file=package.file,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        _progress("step 3/3: writing safetensors")
        _save_plain(loaded, tokenizer, target)
    _progress(f"cached at {target} in {time.monotonic() - started:.1f}s")


def _save_plain(loaded: Any, tokenizer: Any, target: Path) -> None:
    """Save a dequantized GGUF model as a plain checkpoint, appearing at ``target`` at once."""
    import torch
    from transformers import AutoModelForCausalLM

    # save_pretrained refuses a GGUF-quantized model: rebuild a plain one from its config.
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


@contextmanager
def _heartbeat(started: float, every: float = 5.0) -> Iterator[None]:
    """Say every few seconds that the work goes on, so a long step never looks like a hang."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            _progress(f"still converting ({time.monotonic() - started:.0f}s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def download_from_hub(hub_id: str, target: Path) -> Path:
    """Fetch config, tokenizer and safetensors from the hub (only used when online)."""
    try:
        from huggingface_hub import snapshot_download

        _progress(f"downloading {hub_id} from the Hugging Face hub")
        path = snapshot_download(
            hub_id,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"],
        )
    except Exception as exc:  # noqa: BLE001 - offline, no such repo, no auth: all say the same
        raise ModelSourceError(
            f"could not download {hub_id} ({type(exc).__name__}: {exc}); pass a local "
            "checkpoint directory, or use the embedded default model offline"
        ) from None
    return Path(path)


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _progress(message: str) -> None:
    print(f"hydra: {message}", file=sys.stderr, flush=True)
