"""The Python SDK (``hydra.sdk``), sync and async, against live ``hydra run`` nodes serving a
tiny model (tests/sdk_nodes.py): streams, completions, models, status, the economy, and the
retry policy meeting the node's real 429 and 503 answers."""

import time

import pytest
import trio

from hydra.sdk import (
    AsyncClient,
    Client,
    NetworkStatus,
    NoRoute,
    RateLimited,
    Retry,
    RetryPolicy,
    ServiceUnavailable,
)
from tests.sdk_nodes import LIMIT, SdkNodes, sdk_nodes

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "max_tokens": 12}
FAST_RETRY = RetryPolicy(backoff_s=0.05, max_retries=2)  # the 503 test waits ~0.1 s, not ~2 s
TIMEOUT = 30.0  # per attempt: a reply that hangs fails the test instead of waiting the default 300 s


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> SdkNodes:
    with sdk_nodes(tmp_path_factory.mktemp("sdk")) as started:
        yield started


# --- generation ---------------------------------------------------------------------------------


def test_sync_stream_matches_the_whole_greedy_reply(nodes) -> None:
    with Client(nodes.url, timeout=TIMEOUT) as node:
        whole = node.chat(HI, **GREEDY)  # no model: the node's default, from /readyz
        with node.chat(HI, stream=True, **GREEDY) as stream:
            chunks = list(stream)
    assert whole.model == nodes.model and whole.usage and whole.usage.completion_tokens == 12
    assert len([c for c in chunks if c.delta]) > 1
    assert chunks[-1].finish_reason == whole.finish_reason == "length"
    assert "".join(c.delta for c in chunks) == whole.text


async def test_async_stream_matches_the_whole_greedy_reply(nodes) -> None:
    async with AsyncClient(nodes.url, timeout=TIMEOUT) as node:
        whole = await node.chat(HI, nodes.model, **GREEDY)
        async with await node.chat(HI, nodes.model, stream=True, **GREEDY) as stream:
            deltas = [chunk.delta async for chunk in stream]
    assert len(deltas) > 2 and "".join(deltas) == whole.text


def test_sync_completions_whole_and_streamed(nodes) -> None:
    with Client(nodes.url, timeout=TIMEOUT) as node:
        whole = node.complete("1, 2, 3,", nodes.model, **GREEDY)
        streamed = "".join(c.delta for c in node.complete("1, 2, 3,", nodes.model, stream=True, **GREEDY))
    assert whole.finish_reason == "length" and whole.usage and whole.usage.prompt_tokens > 0
    assert streamed == whole.text


async def test_async_completions(nodes) -> None:
    async with AsyncClient(nodes.url, timeout=TIMEOUT) as node:
        reply = await node.complete("1, 2, 3,", max_tokens=4, temperature=0)
    assert reply.model == nodes.model and reply.usage and reply.usage.completion_tokens == 4


# --- the node -------------------------------------------------------------------------------------


def check_status(status: NetworkStatus, model: str) -> None:
    assert status.role == "node" and status.peer_id.startswith("12D3KooW") and status.addrs
    assert status.model == model and status.layers == (0, 6) and status.total_layers == 6
    assert status.stage and status.stage.layers == (0, 6) and status.stage.precision == "float32"
    assert status.verification and status.verification.verify_rate is not None
    assert status.announce and status.announce.interval_s and status.hardware
    assert status.economy and status.economy.hydra is None and status.economy.federation is None


def test_sync_models_status_and_readiness(nodes) -> None:
    with Client(nodes.url, timeout=TIMEOUT) as node:
        models = {m.id: m for m in node.models()}
        check_status(node.network_status(), nodes.model)
        assert node.health() and node.ready().ready and node.ready().model == nodes.model
        assert node.model(nodes.model).routable
    assert models[nodes.model].routable and not models[nodes.unrouted].routable


async def test_async_models_and_status(nodes) -> None:
    async with AsyncClient(nodes.url, timeout=TIMEOUT) as node:
        models = await node.models()
        check_status(await node.network_status(), nodes.model)
        assert await node.health()
    assert models[0].id == nodes.model and models[0].routable  # routable models come first


# --- retries against the node's own 429 and 503 ---------------------------------------------------


def burst(url: str) -> RateLimited:
    """Spend the limited node's window until it refuses; its refusal."""
    with Client(url, retry=RetryPolicy(max_retries=0), timeout=TIMEOUT) as node:
        for _ in range(LIMIT + 1):
            try:
                node.models()
            except RateLimited as refused:
                return refused
    raise AssertionError(f"{LIMIT + 1} requests were not rate limited")


def check_waited(refused: RateLimited, retries: list[Retry], elapsed: float) -> None:
    assert refused.status == 429 and refused.code == "rate_limit_exceeded" and 1 <= refused.retry_after <= 2
    assert retries and all(isinstance(r.error, RateLimited) for r in retries)
    assert all(r.delay >= r.error.retry_after for r in retries) and elapsed >= retries[0].error.retry_after


def test_sync_429_is_retried_after_retry_after(nodes) -> None:
    refused, retries = burst(nodes.limited_url), []
    started = time.monotonic()
    with Client(nodes.limited_url, on_retry=retries.append, timeout=TIMEOUT) as node:
        models = node.models()
    check_waited(refused, retries, time.monotonic() - started)
    assert nodes.model in {m.id for m in models}


async def test_async_429_is_retried_after_retry_after(nodes) -> None:
    refused, retries = burst(nodes.limited_url), []
    started = trio.current_time()
    async with AsyncClient(nodes.limited_url, on_retry=retries.append, timeout=TIMEOUT) as node:
        # a POST: the node closes a connection whose POST it refused unread, so the retry
        # goes out on a fresh one
        reply = await node.complete("abc", nodes.model, max_tokens=2, temperature=0)
    check_waited(refused, retries, trio.current_time() - started)
    assert reply.usage.completion_tokens == 2


def test_sync_503_is_surfaced_as_no_route_after_its_retries(nodes) -> None:
    retries: list[Retry] = []
    node = Client(nodes.url, retry=FAST_RETRY, on_retry=retries.append, timeout=TIMEOUT)
    with node, pytest.raises(NoRoute) as raised:
        node.chat(HI, nodes.unrouted, max_tokens=2)
    assert raised.value.status == 503 and raised.value.code == "no_route"
    assert nodes.unrouted in raised.value.message
    assert len(retries) == FAST_RETRY.max_retries


async def test_async_503_is_surfaced_as_no_route_after_its_retries(nodes) -> None:
    retries: list[Retry] = []
    async with AsyncClient(nodes.url, retry=FAST_RETRY, on_retry=retries.append, timeout=TIMEOUT) as node:
        with pytest.raises(NoRoute):
            await node.chat(HI, nodes.unrouted, stream=True, max_tokens=2)  # refused before it began
    assert len(retries) == FAST_RETRY.max_retries


# --- economy: no token federation here ---------------------------------------------------------


def check_no_federation(refused: ServiceUnavailable) -> None:
    """What this node answers every money call: 503 ``no_federation``, before touching any HYDRA."""
    assert refused.status == 503 and refused.code == "no_federation" and refused.type == "service_unavailable"
    assert "no HYDRA token federation has answered yet" in refused.message


def test_sync_balance_and_money_calls_without_a_federation(nodes) -> None:
    retries: list[Retry] = []
    with Client(nodes.url, on_retry=retries.append, timeout=TIMEOUT) as node:
        balance, status = node.balance(), node.network_status()
        calls = [lambda: node.stake(1), lambda: node.unstake("0.5"),
                 lambda: node.open_channel(status.peer_id, 1), lambda: node.close_channel("00" * 32)]
        for call in calls:
            with pytest.raises(ServiceUnavailable) as refused:
                call()
            check_no_federation(refused.value)
    assert balance.peer_id == status.peer_id and balance.barter.credits >= 0
    assert balance.hydra is None and balance.federation is None  # the node says it has no HYDRA
    assert retries == []  # a 503 may hide a done deed: money calls are not repeated on it


async def test_async_balance_and_money_calls_without_a_federation(nodes) -> None:
    async with AsyncClient(nodes.url, timeout=TIMEOUT) as node:
        balance = await node.balance()
        calls = [lambda: node.stake(2.5), lambda: node.unstake(1),
                 lambda: node.open_channel(balance.peer_id or "", "1"), lambda: node.close_channel("ab" * 32)]
        for call in calls:
            with pytest.raises(ServiceUnavailable) as refused:
                await call()
            check_no_federation(refused.value)
    assert balance.hydra is None and balance.barter.decay_per_day == 0.05
