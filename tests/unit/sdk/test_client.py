"""hydra.sdk.client: the sync client against a scripted node (httpx.MockTransport) and a
fake sleep, so retries are counted and timed without waiting."""

import json
from email.utils import formatdate

import httpx
import pytest

from hydra.sdk import (
    ChatCompletion,
    Client,
    ConnectionFailed,
    Message,
    NoRoute,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServiceUnavailable,
    StreamError,
    UnexpectedResponse,
)
from tests.unit.sdk.scripted import COMPLETION, SSE, Script, Sleeps, chunk, cut_after, error, sse

NOW = 1_800_000_000.0
HI = [{"role": "user", "content": "Hi"}]
NO_ROUTE = error(503, "no peers cover tiny", "no_route", type="service_unavailable")
NO_FEDERATION = error(503, "no HYDRA token federation has answered yet", type="service_unavailable")
ACCOUNT = {"hydra": 1.0, "staked": 2.0, "channels": []}


def rate_limited(retry_after: str) -> httpx.Response:
    return error(429, "rate limit of 3 requests per 2s exceeded", "rate_limit_exceeded",
                 type="rate_limit_exceeded", headers={"Retry-After": retry_after})


def client(script: Script, sleeps: Sleeps, **options) -> Client:
    """Waits at the top of their jitter range: 0.5, 1, 2... seconds."""
    options.setdefault("retry", RetryPolicy(jitter=lambda: 1.0))
    return Client("http://node", transport=script.transport, sleep=sleeps, clock=lambda: NOW, **options)


def body(request: httpx.Request) -> dict:
    return json.loads(request.content)


def test_chat_sends_the_request_and_types_the_reply() -> None:
    degraded = {"X-OpenHydra-Degradation-Reason": "served tiny"}
    script = Script(httpx.Response(200, json={**COMPLETION, "extra": 1}, headers=degraded))
    reply = client(script, Sleeps()).chat([*HI, Message("assistant", "Hello")], "big", temperature=0,
                                          max_tokens=8)
    assert isinstance(reply, ChatCompletion) and reply.text == "Paris." and reply.finish_reason == "stop"
    assert reply.usage and reply.usage.total_tokens == 11 and reply.degradation == "served tiny"
    sent = body(script.requests[0])
    assert script.paths == ["/v1/chat/completions"] and sent["model"] == "big" and sent["stream"] is False
    assert sent["messages"][1] == {"role": "assistant", "content": "Hello"}
    assert sent["temperature"] == 0 and sent["max_tokens"] == 8


def test_without_a_model_the_nodes_default_is_asked_once() -> None:
    not_ready = httpx.Response(503, json={"ready": False, "model": "tiny"})  # still names the model
    script = Script(not_ready, httpx.Response(200, json=COMPLETION))
    node = client(script, Sleeps())
    node.chat(HI)
    node.chat(HI)
    assert script.paths == ["/readyz", "/v1/chat/completions", "/v1/chat/completions"]
    assert body(script.requests[1])["model"] == body(script.requests[2])["model"] == "tiny"


def test_a_stream_yields_typed_chunks() -> None:
    events = sse(chunk(role=True), chunk("Par"), chunk("is."), chunk(finish="stop"))
    script = Script(httpx.Response(200, content=events, headers=SSE))
    with client(script, Sleeps()).chat(HI, "tiny", stream=True) as stream:
        chunks = list(stream)
    assert "".join(c.delta for c in chunks) == "Paris." and chunks[-1].finish_reason == "stop"
    assert body(script.requests[0])["stream"] is True


def test_429_waits_as_long_as_retry_after_says_in_seconds() -> None:
    script, sleeps = Script(rate_limited("2"), httpx.Response(200, json={"data": []})), Sleeps()
    assert client(script, sleeps).models() == ()
    assert sleeps == [2.0] and len(script.requests) == 2


def test_429_waits_until_an_http_date_retry_after() -> None:
    in_5s = formatdate(NOW + 5, usegmt=True)
    script, sleeps = Script(rate_limited(in_5s), httpx.Response(200, json={"data": []})), Sleeps()
    client(script, sleeps).models()
    assert sleeps == [5.0]


def test_429_longer_than_the_wait_cap_is_raised_with_its_retry_after() -> None:
    script, sleeps = Script(rate_limited("120")), Sleeps()
    with pytest.raises(RateLimited) as raised:
        client(script, sleeps).models()
    assert raised.value.retry_after == 120.0 and sleeps == [] and len(script.requests) == 1


def test_503_is_retried_with_backoff_then_raised_as_no_route() -> None:
    script, sleeps = Script(NO_ROUTE), Sleeps()
    with pytest.raises(NoRoute) as raised:
        client(script, sleeps).chat(HI, "tiny-unserved")
    assert raised.value.status == 503 and raised.value.code == "no_route"
    assert sleeps == [0.5, 1.0, 2.0] and len(script.requests) == 4


def test_connection_failures_are_retried_then_raised() -> None:
    script, sleeps = Script(httpx.ConnectError("refused")), Sleeps()
    with pytest.raises(ConnectionFailed) as raised:
        client(script, sleeps, retry=RetryPolicy(max_retries=2, jitter=lambda: 1.0)).health()
    assert not raised.value.request_sent and len(script.requests) == 3 and sleeps == [0.5, 1.0]


def test_refusals_that_retrying_cannot_change_are_raised_at_once() -> None:
    unknown = error(404, "The model 'nope' does not exist", "model_not_found", param="model")
    script, sleeps = Script(unknown), Sleeps()
    with pytest.raises(NotFound) as raised:
        client(script, sleeps).model("nope")
    assert raised.value.param == "model" and len(script.requests) == 1 and sleeps == []


def test_a_stream_is_retried_before_it_begins_but_never_after() -> None:
    began = sse(chunk(role=True), chunk("Par"), {"error": {"message": "this node is shutting down",
                                                           "type": "service_unavailable",
                                                           "code": "shutting_down"}})
    script, sleeps = Script(NO_ROUTE, httpx.Response(200, content=began, headers=SSE)), Sleeps()
    stream = client(script, sleeps).chat(HI, "tiny", stream=True)
    seen = []
    with pytest.raises(StreamError) as raised:
        seen.extend(c.delta for c in stream)
    assert seen == ["", "Par"] and raised.value.code == "shutting_down"
    assert len(script.requests) == 2 and sleeps == [0.5]  # the 503 before it began, nothing after
    assert stream.response.is_closed


def test_a_stream_cut_mid_way_is_a_lost_connection_not_retried() -> None:
    script = Script(httpx.Response(200, content=cut_after(sse(chunk("Par"), done=False)), headers=SSE))
    with pytest.raises(ConnectionFailed) as raised:
        list(client(script, Sleeps()).complete("The capital", "tiny", stream=True))
    assert raised.value.request_sent and len(script.requests) == 1


@pytest.mark.parametrize(
    ("answer", "tries"),
    [(NO_FEDERATION, 1), (httpx.ReadError("reset"), 1),  # may have acted: raised at once
     (httpx.ConnectError("refused"), 2), (rate_limited("1"), 2)],  # certainly did not: retried
)
def test_money_calls_are_retried_only_when_the_node_certainly_did_nothing(answer, tries) -> None:
    script = Script(answer, httpx.Response(200, json=ACCOUNT))
    try:
        client(script, Sleeps()).stake(1)
    except (ServiceUnavailable, ConnectionFailed):
        pass
    assert len(script.requests) == tries


def test_the_money_token_goes_with_money_calls_only() -> None:
    script = Script(httpx.Response(200, json={"id": "3f2a", **ACCOUNT}))
    node = client(script, Sleeps(), money_token="s3cret")
    opened = node.open_channel("12D3KooWpeer", "2.5")
    node.balance()
    assert opened.id == "3f2a" and opened.account.staked == 2.0
    assert body(script.requests[0]) == {"peer": "12D3KooWpeer", "deposit": "2.5"}
    assert [r.headers.get("authorization") for r in script.requests] == ["Bearer s3cret", None]


def test_an_answer_that_is_not_json_is_unexpected() -> None:
    with pytest.raises(UnexpectedResponse):
        client(Script(httpx.Response(200, text="<html>")), Sleeps()).network_status()


def test_a_base_url_ending_in_v1_as_openai_clients_take_it_works_too() -> None:
    script = Script(httpx.Response(200, json={"data": [{"id": "tiny", "routable": True}]}))
    node = Client("http://node/v1/", transport=script.transport)
    assert node.models()[0].routable and script.paths == ["/v1/models"]
