"""What both API families share: model names, graceful degradation, running a generation
with its errors mapped to HTTP, and metrics."""

from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from hydra.api.errors import APIError
from hydra.api.metrics import Metrics
from hydra.coordinator.generation import Completion, Coordinator, Delta, GenerationRequest
from hydra.coordinator.routing import NoRoute
from hydra.models.catalog import Catalog, ModelSpec

DEGRADATION_HEADER = "X-OpenHydra-Degradation-Reason"


@dataclass(frozen=True)
class Resolved:
    spec: ModelSpec
    degradation: str | None = None  # why a smaller model than requested is served

    def headers(self) -> dict[str, str]:
        return {DEGRADATION_HEADER: self.degradation} if self.degradation else {}


class GenerationService:
    def __init__(self, coordinator: Coordinator, catalog: Catalog, metrics: Metrics) -> None:
        self.coordinator = coordinator
        self.catalog = catalog
        self.metrics = metrics

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.catalog.resolve(name)
        except KeyError:
            known = ", ".join(s.id for s in self.catalog.models)
            raise APIError(
                404,
                f"The model {name!r} does not exist. Available models: {known}",
                param="model",
                code="model_not_found",
            ) from None

    async def resolve(self, name: str) -> Resolved:
        """The requested model if a complete route serves it, else the largest smaller model
        of its family that has one (with the reason), else 503."""
        spec = self.spec(name)
        if await self.coordinator.route_available(spec.id):
            return Resolved(spec)
        smaller = sorted(
            (s for s in self.catalog.models if s.family == spec.family and s.parameters < spec.parameters),
            key=lambda s: s.parameters,
            reverse=True,
        )
        for fallback in smaller:
            if await self.coordinator.route_available(fallback.id):
                return Resolved(
                    fallback,
                    f"no complete route for {spec.id}; serving {fallback.id}, the largest smaller "
                    f"{spec.family} model with one",
                )
        raise APIError(
            503,
            f"no peers currently cover all {spec.num_layers} blocks of {spec.id}; try again later",
            type="service_unavailable",
            code="no_route",
        )

    async def start(self, request: GenerationRequest) -> AsyncGenerator[Delta | Completion, None]:
        """Begin a generation and wait for its first event, so errors that precede any output
        (a prompt too long, no route) become HTTP errors instead of broken streams. Returns
        all its events, the first included; close it (``aclosing``) to stop early."""
        events = self.events(request)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return _chain(first, events)

    async def events(self, request: GenerationRequest) -> AsyncGenerator[Delta | Completion, None]:
        stream = self.coordinator.stream(request)
        try:
            async for event in stream:
                if isinstance(event, Completion):
                    self.metrics.observe(event)
                yield event
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        except NoRoute as exc:
            raise APIError(503, str(exc), type="service_unavailable", code="no_route") from None
        finally:
            await stream.aclose()

    def with_model(self, request: GenerationRequest, resolved: Resolved) -> GenerationRequest:
        return replace(request, model=resolved.spec.id)


async def _chain(
    first: Delta | Completion, rest: AsyncGenerator[Delta | Completion, None]
) -> AsyncGenerator[Delta | Completion, None]:
    try:
        yield first
        if not isinstance(first, Completion):
            async for event in rest:
                yield event
    finally:
        await rest.aclose()
