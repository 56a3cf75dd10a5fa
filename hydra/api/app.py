"""The quart-trio application: health, network status, the DHT adapter; JSON errors only."""

from collections.abc import Callable
from typing import Any

from quart import Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from hydra.dht.http_adapter import dht_blueprint, error_body
from hydra.dht.kademlia import Dht

MAX_BODY = 64 * 1024  # nothing these endpoints accept is larger than one signed record


def create_app(dht: Dht, status: Callable[[], dict[str, Any]]) -> QuartTrio:
    app = QuartTrio("openhydra")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.register_blueprint(dht_blueprint(dht))

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/v1/network/status")
    async def network_status() -> Any:
        return status()

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = app.json.response(error_body(code, exc.description or code))
        response.status_code = exc.code or 500
        return response

    return app
