"""Reading request bodies as JSON, never raising on bytes a client made up."""

import json
from typing import Any

from quart import request

from hydra.api.errors import bad_request


async def read_json() -> Any:
    """The request body as JSON, or None if it is not UTF-8 JSON."""
    raw = await request.get_data(as_text=False)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


async def json_body() -> Any:
    """The request body as JSON; a 400 naming the problem when it is not."""
    body = await read_json()
    if body is None:
        raise bad_request("the request body must be valid JSON")
    return body
