"""The economy's endpoints: balances for anyone who can reach the API, and the calls that move
this node's HYDRA (stake, unstake, opening and closing channels) for its operator only.

Money calls answer only clients on this machine (loopback), or a client presenting
``Authorization: Bearer <APIConfig.money_token>`` when the operator set one: an API opened to
a network with ``--api-host 0.0.0.0`` must not let anyone on it spend the node's stake."""

import hmac
from decimal import Decimal, InvalidOperation
from ipaddress import ip_address
from typing import Any

from quart import Blueprint, request

from hydra.api.bodies import json_body
from hydra.api.config import APIConfig
from hydra.api.errors import APIError, bad_request
from hydra.api.fields import Fields
from hydra.coordinator.generation import Coordinator
from hydra.economy.service import TokenService
from hydra.economy.tokenlog import CAP, MICRO
from hydra.economy.wallet import TokenRefused
from hydra.errors import Unavailable


def hydra_amount(body: Any, name: str) -> int:
    """``body[name]``: a positive amount of HYDRA (a number or a decimal string, at most six
    decimals) as integer micro-HYDRA."""
    value = body.get(name) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad_request(f"{name!r} must be an amount of HYDRA (a number or a decimal string)", name)
    try:
        micro = Decimal(str(value)) * MICRO
    except InvalidOperation:
        raise bad_request(f"{name!r} is not a number", name) from None
    if not micro.is_finite() or micro != micro.to_integral_value():
        raise bad_request(f"{name!r} has more than six decimals", name)
    if not 0 < micro <= CAP:
        raise bad_request(f"{name!r} must be more than 0 and at most the supply cap (69,000,000)", name)
    return int(micro)


def operator_only(config: APIConfig) -> None:
    """Refuse a money call from anyone but this machine or a holder of the operator's token."""
    try:
        local = ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        local = False
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    token = config.money_token
    if local or (token and hmac.compare_digest(given.encode(), token.encode())):
        return
    raise APIError(
        403,
        "calls that move HYDRA are served to this machine only (or with the operator's token: "
        "HYDRA_MONEY_TOKEN)",
        type="permission_error",
        code="operator_only",
    )


async def refusals_as_errors(call: Any) -> Any:
    try:
        return await call
    except TokenRefused as exc:
        raise APIError(exc.http_status, exc.message, code=exc.protocol_code) from None


def economy_blueprint(coordinator: Coordinator, config: APIConfig) -> Blueprint:
    bp = Blueprint("economy", __name__)

    def tokens() -> TokenService:
        if coordinator.tokens is None:
            raise Unavailable("this node does not take part in the HYDRA token")
        return coordinator.tokens

    @bp.get("/v1/account/balance")
    async def balance() -> Any:
        """Barter credits, and the node's HYDRA (liquid, staked, in channels) from its replica."""
        hydra = coordinator.tokens.status() if coordinator.tokens is not None else {"federation": None}
        return {"peer_id": coordinator.peer_id, "barter": coordinator.barter_status(), "hydra": hydra}

    @bp.post("/v1/hydra/stake")
    async def stake() -> Any:
        operator_only(config)
        amount = hydra_amount(await json_body(), "amount")
        return await refusals_as_errors(tokens().stake(amount))

    @bp.post("/v1/hydra/unstake")
    async def unstake() -> Any:
        operator_only(config)
        amount = hydra_amount(await json_body(), "amount")
        return await refusals_as_errors(tokens().unstake(amount))

    @bp.post("/v1/hydra/channels/open")
    async def open_channel() -> Any:
        operator_only(config)
        body = await json_body()
        peer = Fields(body).string("peer", required=True, max_length=128)
        return await refusals_as_errors(tokens().open_channel(peer, hydra_amount(body, "deposit")))

    @bp.post("/v1/hydra/channels/close")
    async def close_channel() -> Any:
        operator_only(config)
        text = Fields(await json_body()).string("id", required=True, max_length=64)
        try:
            channel_id = bytes.fromhex(text)
        except ValueError:
            raise bad_request("'id' must be the channel's id in hex", "id") from None
        return await refusals_as_errors(tokens().close_channel(channel_id))

    return bp
