"""The money endpoints: amounts parsed strictly, and only this machine (or the operator's
token) may move HYDRA. The token service behind them is a recorder here; the real one is
driven over HTTP in tests/integration/test_api_over_pipeline.py."""

from dataclasses import dataclass, field
from typing import Any

import pytest
from quart_trio import QuartTrio

from hydra.api.app import add_error_shapes
from hydra.api.config import APIConfig
from hydra.api.economy import economy_blueprint


@dataclass
class Recorder:
    staked: list[int] = field(default_factory=list)

    async def stake(self, amount: int) -> dict[str, Any]:
        self.staked.append(amount)
        return {"staked": amount}

    def status(self) -> dict[str, Any]:
        return {"federation": {"members": 1, "k": 1}}


@dataclass
class Node:
    tokens: Recorder
    peer_id: str = "12D3KooWnode"

    def barter_status(self) -> dict[str, Any]:
        return {"credits": 0.0}


def app_for(node: Node, token: str = "") -> QuartTrio:
    app = QuartTrio("test")
    app.register_blueprint(economy_blueprint(node, APIConfig(money_token=token)))  # type: ignore[arg-type]
    add_error_shapes(app)
    return app


ELSEWHERE = {"client": ("203.0.113.9", 40000)}
HERE = {"client": ("127.0.0.1", 40000)}


@pytest.mark.parametrize(
    ("amount", "micro"), [(2.5, 2_500_000), ("0.000001", 1), (3, 3_000_000), ("69000000", 69 * 10**12)]
)
async def test_amounts_become_exact_micro_hydra(amount, micro) -> None:
    node = Node(Recorder())
    response = (
        await app_for(node).test_client().post("/v1/hydra/stake", json={"amount": amount}, scope_base=HERE)
    )
    assert response.status_code == 200 and node.tokens.staked == [micro]


async def test_money_calls_from_elsewhere_need_the_operators_token() -> None:
    node = Node(Recorder())
    client = app_for(node, token="s3cret").test_client()
    refused = await client.post("/v1/hydra/stake", json={"amount": 1}, scope_base=ELSEWHERE)
    assert refused.status_code == 403 and (await refused.get_json())["error"]["code"] == "operator_only"
    wrong = await client.post(
        "/v1/hydra/stake", json={"amount": 1}, scope_base=ELSEWHERE, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 403
    allowed = await client.post(
        "/v1/hydra/stake",
        json={"amount": 1},
        scope_base=ELSEWHERE,
        headers={"Authorization": "Bearer s3cret"},
    )
    assert allowed.status_code == 200
    reading = await client.get("/v1/account/balance", scope_base=ELSEWHERE)  # reading is open
    assert reading.status_code == 200 and node.tokens.staked == [1_000_000]


async def test_without_a_token_only_loopback_moves_money() -> None:
    client = app_for(Node(Recorder())).test_client()
    assert (await client.post("/v1/hydra/stake", json={"amount": 1}, scope_base=ELSEWHERE)).status_code == 403
    assert (await client.post("/v1/hydra/stake", json={"amount": 1}, scope_base=HERE)).status_code == 200
