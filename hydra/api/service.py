"""What both API families share: model names, graceful degradation, running a generation
with its errors mapped to HTTP, and metrics."""

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace

from hydra.api.errors import APIError, from_error, no_route
from hydra.api.metrics import Metrics
from hydra.coordinator.generation import Completion, Coordinator, Delta, GenerationRequest
from hydra.coordinator.routing import Candidate
from hydra.errors import HydraError, UnknownModel
from hydra.models.catalog import Catalog, ModelSpec

DEGRADATION_HEADER = "X-OpenHydra-Degradation-Reason"

Events = AsyncGenerator[Delta | Completion, None]


@dataclass(frozen=True)
class Resolved:
    """The model a request will be served with, and the route planned for it on admission."""

    spec: ModelSpec
    route: list[Candidate] = field(default_factory=list)
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
        except UnknownModel:
            known = ", ".join(s.id for s in self.catalog.models)
            raise APIError(
                404,
                f"The model {name!r} does not exist. Available models: {known}",
                param="model",
                code="model_not_found",
            ) from None

    async def resolve(self, name: str) -> Resolved:
        """The requested model and its route if one covers it, else the largest smaller model
        of its family that has one (with the reason), else 503."""
        spec = self.spec(name)
        route = await self.coordinator.plan(spec.id)
        if route is not None:
            return Resolved(spec, route)
        smaller = sorted(
            (s for s in self.catalog.models if s.family == spec.family and s.parameters < spec.parameters),
            key=lambda s: s.parameters,
            reverse=True,
        )
        for fallback in smaller:
            route = await self.coordinator.plan(fallback.id)
            if route is not None:
                reason = (f"no complete route for {spec.id}; serving {fallback.id}, the largest "
                          f"smaller {spec.family} model with one")
                return Resolved(fallback, route, reason)
        raise no_route(
            f"no peers currently cover all {spec.num_layers} blocks of {spec.id}; try again later"
        )

    async def start(self, request: GenerationRequest, route: list[Candidate] | None = None) -> Events:
        """Begin a generation (along ``route`` when the request was just admitted on it) and
        wait for its first event, so errors that precede any output (a prompt too long, no
        route) become HTTP errors instead of broken streams. Returns all its events, the
        first included; close it (``aclosing``) to stop early."""
        events = self._events(request, route)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return _chain(first, events)

    async def _events(self, request: GenerationRequest, route: list[Candidate] | None) -> Events:
        stream = self.coordinator.stream(request, route)
        try:
            async for event in stream:
                if isinstance(event, Completion):
                    self.metrics.observe(event)
                yield event
        except HydraError as exc:
            raise from_error(exc) from None
        finally:
            await stream.aclose()

    def with_model(self, request: GenerationRequest, resolved: Resolved) -> GenerationRequest:
        return replace(request, model=resolved.spec.id)


async def _chain(first: Delta | Completion, rest: Events) -> Events:
    try:
        yield first
        if not isinstance(first, Completion):
            async for event in rest:
                yield event
    finally:
        await rest.aclose()
