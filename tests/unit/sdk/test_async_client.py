"""hydra.sdk.async_client: the async client (under trio, as pytest runs it here) shares the
sync one's requests, results, errors and retries; these check its own transport and streams."""

import httpx
import pytest

from hydra.sdk import AsyncClient, ConnectionFailed, NoRoute, RetryPolicy, StreamError
from tests.unit.sdk.scripted import COMPLETION, SSE, Script, Sleeps, chunk, cut_after_async, error, sse

HI = [{"role": "user", "content": "Hi"}]


def client(script: Script, sleeps: Sleeps) -> AsyncClient:
    return AsyncClient("http://node", transport=script.transport, sleep=sleeps.wait,
                       retry=RetryPolicy(jitter=lambda: 1.0))


async def test_chat_with_the_default_model_after_a_429() -> None:
    limited = error(429, "slow down", "rate_limit_exceeded", headers={"Retry-After": "2"})
    script, sleeps = Script(httpx.Response(200, json={"ready": True, "model": "tiny"}), limited,
                            httpx.Response(200, json=COMPLETION)), Sleeps()
    async with client(script, sleeps) as node:
        reply = await node.chat(HI, temperature=0)
    assert reply.text == "Paris." and sleeps == [2.0]
    assert script.paths == ["/readyz", "/v1/chat/completions", "/v1/chat/completions"]


async def test_a_stream_yields_typed_chunks() -> None:
    events = sse(chunk(role=True), chunk("Par"), chunk("is."), chunk(finish="stop"))
    script = Script(httpx.Response(200, content=events, headers=SSE))
    async with client(script, Sleeps()) as node, await node.chat(HI, "tiny", stream=True) as stream:
        chunks = [c async for c in stream]
    assert "".join(c.delta for c in chunks) == "Paris." and chunks[-1].finish_reason == "stop"


async def test_503_is_retried_then_raised_as_no_route() -> None:
    script, sleeps = Script(error(503, "no peers cover it", "no_route", type="service_unavailable")), Sleeps()
    with pytest.raises(NoRoute):
        await client(script, sleeps).complete("Hi", "tiny-unserved")
    assert sleeps == [0.5, 1.0, 2.0] and len(script.requests) == 4


async def test_an_error_event_after_the_stream_began_is_not_retried() -> None:
    began = sse(chunk("Par"), {"error": {"message": "stopping", "code": "shutting_down"}})
    script, sleeps = Script(httpx.Response(200, content=began, headers=SSE)), Sleeps()
    stream = await client(script, sleeps).chat(HI, "tiny", stream=True)
    with pytest.raises(StreamError):
        async for _ in stream:
            pass
    assert len(script.requests) == 1 and sleeps == []


async def test_a_stream_cut_mid_way_is_a_lost_connection() -> None:
    cut = httpx.Response(200, content=cut_after_async(sse(chunk("Par"), done=False)), headers=SSE)
    script = Script(cut)
    stream = await client(script, Sleeps()).chat(HI, "tiny", stream=True)
    with pytest.raises(ConnectionFailed):
        async for _ in stream:
            pass
    assert len(script.requests) == 1
