"""The quart-trio application of a node or signpost: OpenAI and Ollama APIs over the
coordinator, the HTTP DHT adapter, health, readiness and metrics; per-client rate limiting;
errors always in the shape the calling client expects, never a bare 500 page."""

from collections.abc import Callable
from typing import Any

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from hydra.api.config import APIConfig
from hydra.api.console import ConsoleView, console_blueprint
from hydra.api.dht import dht_blueprint
from hydra.api.economy import economy_blueprint
from hydra.api.errors import APIError, from_error, hydra_body, ollama_body, openai_body
from hydra.api.metrics import Metrics
from hydra.api.ollama import ollama_blueprint
from hydra.api.openai import openai_blueprint
from hydra.api.ratelimit import SlidingWindowLimiter
from hydra.api.service import GenerationService
from hydra.coordinator.generation import Coordinator
from hydra.dht.kademlia import Dht
from hydra.errors import HydraError
from hydra.models.catalog import Catalog, ModelSpec

MAX_BODY = 4 << 20  # a long chat history fits; anything larger is refused with 413
EXEMPT = frozenset({"/health", "/readyz", "/metrics"})

Gauges = dict[str, tuple[str, Callable[[], float]]]
GENERATION = "openhydra.generation"  # where a node's app keeps its GenerationService


def generation_service(app: QuartTrio) -> GenerationService:
    """The app's generation service (a node drains it before stopping)."""
    return app.extensions[GENERATION]


def create_app(
    dht: Dht,
    status: Callable[[], dict[str, Any]],
    catalog: Catalog,
    coordinator: Coordinator | None = None,
    config: APIConfig = APIConfig(),
    gauges: Gauges | None = None,
) -> QuartTrio:
    """A node passes its coordinator; a signpost (DHT only) does not."""
    app = QuartTrio("openhydra")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    # Quart stops sending a response after 60 s by default, which would cut long generations
    # off mid-stream (no finish_reason, no [DONE]); a client hanging up still cancels them.
    app.config["RESPONSE_TIMEOUT"] = None
    metrics = Metrics(gauges or {})
    app.register_blueprint(dht_blueprint(dht, catalog))
    if coordinator is not None:
        service = GenerationService(coordinator, catalog, metrics)
        app.extensions[GENERATION] = service
        add_generation(app, service, config)
        app.register_blueprint(economy_blueprint(coordinator, config))
    app.register_blueprint(console_blueprint(ConsoleView(dht, status, catalog, coordinator)))
    add_status(app, status, metrics)
    add_rate_limit(app, SlidingWindowLimiter(config.rate_limit, config.rate_window), metrics)
    add_error_shapes(app)
    return app


def add_generation(app: QuartTrio, service: GenerationService, config: APIConfig) -> None:
    """The OpenAI and Ollama APIs and ``/readyz`` over the node's coordinator."""
    coordinator, catalog = service.coordinator, service.catalog

    def loaded() -> list[ModelSpec]:
        ids = set(coordinator.models) | ({coordinator.local.model_id} if coordinator.local else set())
        return [s for s in catalog.models if s.id in ids]

    app.register_blueprint(openai_blueprint(service, config.default_max_tokens))
    app.register_blueprint(ollama_blueprint(service, config.default_max_tokens, loaded))

    @app.get("/readyz")
    async def readyz() -> Any:
        """Whether the node's model has a complete route: the model its stage serves (which
        a promotion may have changed), or the catalog default for a node serving none."""
        model = coordinator.local.model_id if coordinator.local is not None else catalog.default
        ready = await coordinator.route_available(model)
        return {"ready": ready, "model": model}, 200 if ready else 503


def add_status(app: QuartTrio, status: Callable[[], dict[str, Any]], metrics: Metrics) -> None:
    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_endpoint() -> Any:
        return Response(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/network/status")
    async def network_status() -> Any:
        return status()


def add_rate_limit(app: QuartTrio, limiter: SlidingWindowLimiter, metrics: Metrics) -> None:
    """Per client address, except health and metrics; every response counted by endpoint."""

    @app.before_request
    async def rate_limit() -> Any:
        if request.path in EXEMPT:
            return None
        decision = limiter.check(request.remote_addr or "unknown")
        g.rate = decision
        if not decision.allowed:
            raise APIError(
                429,
                f"rate limit of {limiter.limit} requests per {limiter.window:g}s exceeded; "
                f"retry in {decision.reset_s}s",
                type="rate_limit_exceeded",
                code="rate_limit_exceeded",
                # refused before its body was read: a keep-alive connection reused after an
                # unread POST body could stall the client's next request, so end it here
                headers={"Retry-After": str(max(1, decision.reset_s)), "Connection": "close"},
            )
        return None

    @app.after_request
    async def count_and_label(response: Response) -> Response:
        decision = g.get("rate")
        if decision is not None:
            response.headers.update(decision.headers())
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(rule, str(response.status_code)).inc()
        return response


def add_error_shapes(app: QuartTrio) -> None:
    @app.errorhandler(HydraError)
    async def refused(exc: HydraError) -> Response:
        return shaped(app, from_error(exc))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or code
        if exc.code == 413:
            message = f"the request body is larger than this node's limit of {MAX_BODY >> 20} MiB"
        return shaped(app, APIError(exc.code or 500, message, code=code))

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error on %s", request.path)
        return shaped(app, APIError(500, "internal error", type="server_error", code="internal"))


def shaped(app: QuartTrio, error: APIError) -> Response:
    """OpenAI clients under /v1, Ollama clients under /api, our own shape elsewhere."""
    if request.path.startswith("/v1/") and request.path != "/v1/network/status":
        body = openai_body(error)
    elif request.path.startswith("/api/"):
        body = ollama_body(error)
    else:
        body = hydra_body(error.code or "error", error.message)
    response = app.json.response(body)
    response.status_code = error.http_status
    response.headers.update(error.headers)
    return response
