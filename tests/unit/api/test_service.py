"""hydra.api.service: which model answers when the requested one has no route (the network is
stood in for by a coordinator whose routes the test sets; the live path is in
tests/integration/test_first_hour_cli_processes.py)."""

import pytest

from hydra.api.errors import APIError
from hydra.api.metrics import Metrics
from hydra.api.service import GenerationService
from hydra.models.catalog import Catalog, ModelSpec


def spec(model_id: str, family: str, billions: float) -> ModelSpec:
    return ModelSpec(id=model_id, family=family, hub_id="", architecture="test", num_layers=4,
                     parameters=int(billions * 1e9), memory_per_shard_gb=1.0,
                     recommended_quantization="none", peers_needed=1, quality_tier="test")


CATALOG = Catalog("qwen-4b", (spec("qwen-9b", "qwen", 9), spec("qwen-4b", "qwen", 4),
                              spec("qwen-1b", "qwen", 1), spec("llama-3b", "llama", 3),
                              spec("smol", "smol", 0.1), spec("huge", "llama", 70)))


class Routes:
    """A coordinator whose routable models the test chooses."""

    def __init__(self, *routable: str) -> None:
        self.routable_ids = set(routable)

    async def plan(self, model: str, exclude: frozenset[str] = frozenset()):
        return ["route"] if model in self.routable_ids else None

    async def routable(self) -> set[str]:
        return set(self.routable_ids)


def service(*routable: str) -> GenerationService:
    return GenerationService(Routes(*routable), CATALOG, Metrics({}))  # type: ignore[arg-type]


async def test_the_requested_model_is_served_when_it_has_a_route():
    resolved = await service("qwen-9b", "qwen-4b").resolve("qwen-9b")
    assert resolved.spec.id == "qwen-9b" and resolved.degradation is None


async def test_the_nearest_smaller_model_of_the_family_comes_first():
    resolved = await service("qwen-1b", "llama-3b").resolve("qwen-9b")
    assert resolved.spec.id == "qwen-1b" and "qwen model" in resolved.degradation


async def test_another_family_answers_when_the_family_has_no_route():
    resolved = await service("llama-3b", "smol").resolve("qwen-4b")
    assert resolved.spec.id == "llama-3b"
    assert resolved.headers() == {"X-OpenHydra-Degradation-Reason": resolved.degradation}
    assert "no complete route for qwen-4b" in resolved.degradation


async def test_no_smaller_route_is_a_503_naming_what_has_one_and_how_to_serve_it():
    with pytest.raises(APIError) as info:
        await service("huge").resolve("qwen-4b")
    error = info.value
    assert (error.http_status, error.code) == (503, "no_route")
    assert "Models with a route now: huge" in error.message
    assert "hydra run --model qwen-4b" in error.message


async def test_a_draining_node_refuses_new_generations():
    draining = service("qwen-4b")
    await draining.drain(grace=0.1)
    with pytest.raises(APIError) as info:
        await draining.start(None, None)  # type: ignore[arg-type]
    assert (info.value.http_status, info.value.code) == (503, "shutting_down")
