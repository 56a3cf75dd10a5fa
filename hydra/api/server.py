"""Serve a quart-trio app with hypercorn as a task in the caller's nursery."""

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from hydra.p2p.host import ensure_port_free


async def serve_http(
    app: QuartTrio, host: str, port: int, *, task_status: trio.TaskStatus[None]
) -> None:
    """Runs until cancelled; ``task_status.started()`` once the socket listens."""
    ensure_port_free(host, port)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hydra.http")
    config.graceful_timeout = 1.0
    await serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status)
