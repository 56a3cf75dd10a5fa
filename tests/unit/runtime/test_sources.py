"""hydra.runtime.sources.weights_here: which models a node could move to without a download."""

from dataclasses import replace

from hydra.models.catalog import load_catalog
from hydra.runtime.sources import package_dir, weights_here
from tests.tiny_models import save_tiny_model, tiny_llama_config


def test_weights_are_here_when_converted_in_the_cache_or_shipped_in_a_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_CACHE", str(tmp_path))
    catalog = load_catalog()
    qwen = catalog.resolve("qwen3.5-0.8b")
    assert not weights_here(qwen)  # no package, nothing converted: only the hub has it
    save_tiny_model(tiny_llama_config(), tmp_path / "models" / qwen.id)
    assert weights_here(qwen)
    smollm2 = catalog.resolve("smollm2")
    assert weights_here(smollm2) == (package_dir(smollm2.package) is not None)
    missing = replace(smollm2, id="not-converted", package=replace(smollm2.package, module="no_such_module"))
    assert not weights_here(missing)
