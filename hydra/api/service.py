"""What both API families share: model names, graceful degradation, running a generation
with its errors mapped to HTTP, and metrics."""

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace

import trio

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
        self.stopping = False  # draining: no new generations, live ones end with an error
        self.live = 0  # responses still delivering events
        self._waits: set[trio.CancelScope] = set()  # generations waiting for their next event

    async def drain(self, grace: float = 5.0) -> None:
        """Before the node stops: refuse new generations and end each live one with a final
        error event and its stream's terminator, instead of cutting its connection; return
        once they have been handed to their clients (or after ``grace`` seconds)."""
        self.stopping = True
        for scope in list(self._waits):
            scope.cancel()
        with trio.move_on_after(grace):
            while self.live:
                await trio.sleep(0.05)
            await trio.sleep(0.2)  # the last bytes leave the server

    def _check_running(self) -> None:
        if self.stopping:
            raise APIError(503, "this node is shutting down; retry on another node or later",
                           type="service_unavailable", code="shutting_down")

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
        """The requested model and its route if one covers it; else the nearest smaller model
        with a route — of its own family first, of any family when its family has none — with
        the reason; else a 503 naming the models that do have a route."""
        spec = self.spec(name)
        route = await self.coordinator.plan(spec.id)
        if route is not None:
            return Resolved(spec, route)
        routable = await self.coordinator.routable()
        for fallback in self.fallbacks(spec):
            if fallback.id in routable and (route := await self.coordinator.plan(fallback.id)):
                kind = f"{spec.family} model" if fallback.family == spec.family else "model"
                reason = (f"no complete route for {spec.id}; serving {fallback.id}, the nearest "
                          f"smaller {kind} with one")
                return Resolved(fallback, route, reason)
        available = ", ".join(sorted(routable)) or "none"
        raise no_route(
            f"no peers currently cover all {spec.num_layers} blocks of {spec.id}, nor those of a "
            f"smaller model. Models with a route now: {available}. To serve {spec.id} yourself: "
            f"hydra run --model {spec.id} (or join peers that serve it with --bootstrap)"
        )

    def fallbacks(self, spec: ModelSpec) -> list[ModelSpec]:
        """Smaller models, nearest first: its own family's, then every other family's."""
        smaller = [s for s in self.catalog.models if s.parameters < spec.parameters]
        return sorted(smaller, key=lambda s: (s.family != spec.family, -s.parameters))

    async def start(self, request: GenerationRequest, route: list[Candidate] | None = None) -> Events:
        """Begin a generation (along ``route`` when the request was just admitted on it) and
        wait for its first event, so errors that precede any output (a prompt too long, no
        route) become HTTP errors instead of broken streams. Returns all its events, the
        first included; close it (``aclosing``) to stop early."""
        self._check_running()
        events = self._events(request, route)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return self._chain(first, events)

    async def _events(self, request: GenerationRequest, route: list[Candidate] | None) -> Events:
        stream = self.coordinator.stream(request, route)
        try:
            while (event := await self._next(stream)) is not None:
                if isinstance(event, Completion):
                    self.metrics.observe(event)
                yield event
        except HydraError as exc:
            raise from_error(exc) from None
        finally:
            await stream.aclose()

    async def _next(self, stream: AsyncIterator[Delta | Completion]) -> Delta | Completion | None:
        """The generation's next event, None at its end; a drain cuts the wait short."""
        self._check_running()
        with trio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                return await anext(stream, None)
            finally:
                self._waits.discard(scope)
        self._check_running()  # only a drain cancels the wait
        raise AssertionError("a generation's wait was cancelled without a drain")

    async def _chain(self, first: Delta | Completion, rest: Events) -> Events:
        self.live += 1
        try:
            yield first
            if not isinstance(first, Completion):
                async for event in rest:
                    yield event
        finally:
            self.live -= 1
            await rest.aclose()

    def with_model(self, request: GenerationRequest, resolved: Resolved) -> GenerationRequest:
        return replace(request, model=resolved.spec.id)

