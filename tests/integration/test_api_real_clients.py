"""The HTTP API of a live node (``hydra run``, the embedded model) driven by the real
``openai`` and ``ollama`` clients, raw ``httpx`` for wire details, and hostile input.

The node's catalog ($HYDRA_CATALOG) adds a fictitious larger SmolLM2 that nobody serves, to
exercise graceful degradation to the real one."""

import json
import signal
import subprocess

import httpx
import ollama
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from hydra.models.catalog import DEFAULT_PATH
from tests.swarm import EXACT, HYDRA, free_port, node

pytestmark = pytest.mark.slow

MODEL = "openhydra-smollm2-135m"
BIG = "openhydra-smollm2-big-test"


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_checkpoint) -> str:
    tmp = tmp_path_factory.mktemp("api")
    catalog = json.loads(DEFAULT_PATH.read_text())
    small = next(m for m in catalog["models"] if m["id"] == MODEL)
    catalog["models"].append({**small, "id": BIG, "parameters": 10 * small["parameters"],
                              "package": None, "hub_id": "", "aliases": ["smollm2-big"]})
    (tmp / "catalog.json").write_text(json.dumps(catalog))
    proc = node(tmp, "api", [], "--rate-limit", "100000", "--default-max-tokens", "4")
    proc.env["HYDRA_CATALOG"] = str(tmp / "catalog.json")
    proc.start().ready()
    yield proc.url
    proc.stop()


@pytest.fixture
def client(api) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0)


def chat(client: openai.OpenAI, content: str = "What is the capital of France?", **kw):
    return client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": content}], **kw
    )


# --- OpenAI ---------------------------------------------------------------------------------


def test_models_list_shows_the_catalog(client):
    ids = {m.id for m in client.models.list()}
    assert {MODEL, BIG, "openhydra-qwen3.5-9b"} <= ids
    assert client.models.retrieve("smollm2").id == MODEL


def test_chat_completion_with_usage(client):
    reply = chat(client, temperature=0, max_tokens=24)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_chunks_follow_the_spec(client):
    chunks = list(chat(client, temperature=0, max_tokens=24, stream=True,
                       stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks[1:] if c.choices and c.choices[0].finish_reason is None]
    assert content and all(c.choices[0].finish_reason is None for c in content)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(content)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat(client, temperature=0, max_tokens=24).choices[0].message.content


def test_stream_ends_with_done_on_the_wire(api):
    body = {"model": "smollm2", "prompt": "1, 2, 3,", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{api}/v1/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)


def test_completions_max_tokens_gives_length_and_stop_strings_cut(client):
    done = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=3, temperature=0)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 3
    stopped = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=20,
                                        temperature=0, stop=[" 7"])
    assert stopped.choices[0].text == " 5, 6,"
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=20,
                                         temperature=0, stop=" 7", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == " 5, 6,"


def test_seeded_sampling_is_reproducible(client):
    runs = [chat(client, "Tell me a story.", temperature=1.0, seed=42, max_tokens=16)
            for _ in range(2)]
    assert runs[0].choices[0].message.content == runs[1].choices[0].message.content
    other = chat(client, "Tell me a story.", temperature=1.0, seed=43, max_tokens=16)
    assert other.choices[0].message.content != runs[0].choices[0].message.content


def test_logprobs_and_n(client):
    reply = chat(client, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3, n=2)
    assert len(reply.choices) == 2
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens // 2
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in content)
    assert content[0].top_logprobs[0].logprob >= content[0].top_logprobs[1].logprob


def test_bad_request_and_unknown_model_raise_typed_errors(client):
    with pytest.raises(openai.BadRequestError) as bad:
        chat(client, temperature=5)
    assert "temperature" in str(bad.value)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert MODEL in str(missing.value)  # lists what is available


def test_degradation_serves_the_nearest_smaller_model(api):
    body = {"model": "smollm2-big", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    response = httpx.post(f"{api}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200
    assert response.json()["model"] == MODEL
    assert BIG in response.headers["X-OpenHydra-Degradation-Reason"]


def test_a_family_without_a_route_degrades_to_another_family(api):
    body = {"model": "qwen3.5:9b", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    response = httpx.post(f"{api}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200 and response.json()["model"] == MODEL
    reason = response.headers["X-OpenHydra-Degradation-Reason"]
    assert "openhydra-qwen3.5-9b" in reason and MODEL in reason


def test_a_prompt_longer_than_the_context_names_the_limit_and_the_field(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="smollm2", prompt=[1] * 9000, max_tokens=4)
    error = info.value.body
    assert error["param"] == "prompt" and "8192 tokens" in error["message"]


def test_the_economy_endpoints_check_amounts_and_say_when_no_federation_answers(api):
    for amount in (-1, 0, "lots", True, 1e300, "0.0000001", None):
        response = httpx.post(f"{api}/v1/hydra/stake", json={"amount": amount}, timeout=10)
        assert response.status_code == 400 and response.json()["error"]["param"] == "amount", amount
    for path in ("/v1/hydra/stake", "/v1/hydra/unstake"):  # a lone node follows no federation
        response = httpx.post(f"{api}{path}", json={"amount": "1.5"}, timeout=10)
        assert response.status_code == 503 and "federation" in response.json()["error"]["message"]
    bad = {
        "/v1/hydra/channels/open": ({}, {"peer": "p", "deposit": -2}),
        "/v1/hydra/channels/close": ({"id": "zz"},),
    }
    for path, bodies in bad.items():
        for body in bodies:
            assert httpx.post(f"{api}{path}", json=body, timeout=10).status_code == 400, body
    good = {
        "/v1/hydra/channels/open": {"peer": "p", "deposit": 2},
        "/v1/hydra/channels/close": {"id": "00" * 16},
    }
    for path, body in good.items():
        response = httpx.post(f"{api}{path}", json=body, timeout=10)
        assert response.status_code == 503 and "federation" in response.json()["error"]["message"]
    body = {"model": "smollm2", "prompt": "hi", "max_tokens": 2}
    bogus = httpx.post(f"{api}/v1/completions", json={**body, "service_tier": "gold"}, timeout=30)
    assert bogus.status_code == 400 and bogus.json()["error"]["param"] == "service_tier"
    priority = httpx.post(f"{api}/v1/completions", json={**body, "service_tier": "priority"}, timeout=30)
    assert priority.status_code == 503 and "federation" in priority.json()["error"]["message"]
    balance = httpx.get(f"{api}/v1/account/balance", timeout=10).json()
    barter = balance["barter"]
    assert barter["micro_credits"] == round(barter["credits"] * 1_000_000)  # a lone node: it pays nobody
    assert balance["hydra"] == {"federation": None}
    economy = httpx.get(f"{api}/v1/network/status", timeout=10).json()["economy"]
    assert economy == {"barter": barter, "hydra": {"federation": None}}


# --- Ollama ---------------------------------------------------------------------------------


def test_ollama_client_list_show_ps_version(api):
    cl = ollama.Client(host=api)
    assert MODEL in [m.model for m in cl.list().models]
    shown = cl.show("smollm2")
    assert shown.details.family == "smollm2" and "num_ctx" in shown.parameters
    assert shown.modelinfo["general.block_count"] == 30
    assert MODEL in [m.model for m in cl.ps().models]
    assert httpx.post(f"{api}/api/show", json={"name": "smollm2"}).status_code == 200
    assert httpx.get(f"{api}/api/version").json()["version"]


def test_ollama_generate_and_chat_streaming_and_not(api):
    cl = ollama.Client(host=api)
    # raw: a continuation, not a chat turn (without it the model's chat template wraps the prompt)
    done = cl.generate(model="smollm2", prompt="1, 2, 3,", raw=True,
                       options={"num_predict": 6, "temperature": 0})
    assert done.done and done.done_reason == "length" and done.eval_count == 6
    assert done.prompt_eval_count > 0 and done.eval_duration > 0 and done.total_duration > 0
    assert done.response.startswith(" 4, 5")
    parts = list(cl.generate(model="smollm2", prompt="1, 2, 3,", stream=True, raw=True,
                             options={"num_predict": 6, "temperature": 0}))
    assert parts[-1].done and "".join(p.response for p in parts) == done.response
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = cl.chat(model="smollm2", messages=messages, options={"temperature": 0, "num_predict": 24})
    assert "Paris" in reply.message.content and reply.eval_count > 0 and reply.prompt_eval_count > 10
    streamed = list(cl.chat(model="smollm2", messages=messages, stream=True,
                            options={"temperature": 0, "num_predict": 24}))
    assert "".join(p.message.content for p in streamed) == reply.message.content
    assert streamed[-1].done and streamed[-1].done_reason == "stop"


def test_ollama_errors_are_typed(api):
    cl = ollama.Client(host=api)
    with pytest.raises(ollama.ResponseError) as info:
        cl.generate(model="nope", prompt="hi")
    assert info.value.status_code == 404 and "available" in info.value.error.lower()


# --- operations -----------------------------------------------------------------------------


def test_health_readyz_and_metrics_move(api):
    assert httpx.get(f"{api}/health").json() == {"status": "ok"}
    assert httpx.get(f"{api}/readyz").status_code == 200

    def tokens() -> float:
        families = text_string_to_metric_families(httpx.get(f"{api}/metrics").text)
        samples = {s.name: s.value for f in families for s in f.samples
                   if not s.labels or "model" in s.labels}
        return samples.get("hydra_tokens_generated_total", 0.0)

    before = tokens()
    httpx.post(f"{api}/v1/completions", json={"model": "smollm2", "prompt": "a", "max_tokens": 2}, timeout=60)
    assert tokens() == before + 2
    names = {f.name for f in text_string_to_metric_families(httpx.get(f"{api}/metrics").text)}
    assert {"hydra_http_requests", "hydra_time_to_first_token_seconds", "hydra_inter_token_seconds",
            "hydra_hop_latency_seconds", "hydra_stage_sessions", "hydra_known_peers",
            "hydra_layers_served", "hydra_active_generations", "hydra_barter_credits",
            "hydra_stage_batch_rows", "hydra_prefix_cache_blocks", "hydra_prefix_cache_reused_blocks",
            "hydra_draft_tokens", "hydra_kv_compactions"} <= names


USER_X = b'[{"role": "user", "content": "x"}]'
HOSTILE = [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", b'{"model": "smollm2", "messages": "hi"}'),
    ("/v1/chat/completions", b'{"model": 7, "messages": []}'),
    ("/v1/chat/completions", b'{"model": "smollm2", "messages": [{"role": "wizard", "content": "x"}]}'),
    ("/v1/chat/completions", b'{"model": "smollm2", "messages": ' + USER_X + b', "max_tokens": -5}'),
    ("/v1/chat/completions", b'{"model": "smollm2", "messages": ' + USER_X + b', "max_tokens": 1e300}'),
    ("/v1/chat/completions", b'{"model": "smollm2", "messages": ' + USER_X + b', "n": 1000}'),
    ("/v1/completions", b'{"model": "smollm2", "prompt": [99999999]}'),
    ("/v1/completions", b'{"model": "smollm2", "prompt": ""}'),
    ("/v1/completions", b'{"model": "smollm2", "prompt": "x", "stop": ["", "a"]}'),
    ("/api/generate", b'[1, 2, 3]'),
    ("/api/generate", b'{"model": "smollm2", "prompt": "x", "options": {"temperature": "hot"}}'),
    ("/api/chat", b'{"model": "smollm2", "messages": [{"role": "user", "content": {"a": 1}}]}'),
    ("/api/show", b'{}'),
]


@pytest.mark.parametrize(("path", "body"), HOSTILE)
def test_hostile_requests_get_clear_4xx(api, path, body):
    response = httpx.post(f"{api}{path}", content=body, timeout=30)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    message = error if path.startswith("/api/") else error["message"]
    assert isinstance(message, str) and message


def test_huge_body_is_refused_with_413(api):
    response = httpx.post(f"{api}/v1/chat/completions", content=b"x" * (5 << 20), timeout=30)
    assert response.status_code == 413 and "4 MiB" in response.json()["error"]["message"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["model", "messages", "prompt", "max_tokens", "temperature", "top_p", "stop", "n", "seed",
          "stream", "logprobs", "top_logprobs", "options", "stream_options"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/api/generate", "/api/chat"]),
       body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
def test_generated_hostile_bodies_never_cause_a_5xx(api, path, body):
    """Random JSON in every field; sizes that would be valid are clamped so a body that
    happens to be a valid request generates a few tokens, not thousands."""
    for key in ("max_tokens", "n"):
        if type(body.get(key)) is int:
            body[key] = max(-3, min(body[key], 2))
    if isinstance(body.get("options"), dict) and type(body["options"].get("num_predict")) is int:
        body["options"]["num_predict"] = min(body["options"]["num_predict"], 2)
    raw = json.dumps(body).encode()  # NaN and Infinity included: not JSON, but clients send them
    response = httpx.post(f"{api}{path}", content=raw, timeout=60)
    assert response.status_code < 500, response.text


def test_node_still_serves_after_the_abuse(client):
    assert "Paris" in chat(client, temperature=0, max_tokens=24).choices[0].message.content


def test_hydra_chat_streams_a_conversation(api):
    done = subprocess.run([*HYDRA, "chat", "--api", api, "--temperature", "0", "--max-tokens", "24"],
                          input="What is the capital of France?\n/exit\n", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


def test_hydra_chat_without_a_node_says_so():
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([*HYDRA, "chat", "--api", nowhere], input="hello\n", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"no OpenHydra node answers at {nowhere}" in done.stderr


@pytest.mark.parametrize("source", ["embedded", "--model-path"])
def test_hydra_generate_standalone_prints_the_api_greedy_text(api, tmp_path, smollm2_checkpoint,
                                                              source):
    """``hydra generate`` with no ``--bootstrap`` runs the model in its own process, from the
    embedded package or a checkpoint directory; in the node's runtime, its greedy text is the
    node's temperature-0 text for the same chat."""
    question = "What is the capital of France?"
    path = ["--model-path", str(smollm2_checkpoint)] if source == "--model-path" else []
    done = subprocess.run([*HYDRA, "generate", "--home", str(tmp_path), "--chat", "--max-tokens",
                           "12", "--device", "cpu", *EXACT, *path, question],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    ai = openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0)
    served = ai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                        max_tokens=12, temperature=0)
    assert done.stdout.strip() == served.choices[0].message.content.strip()
    assert "route 1 hop(s)" in done.stderr and "tokens/s" in done.stderr


# --- rate limiting --------------------------------------------------------------------------


def test_rate_limit_headers_and_429(tmp_path, smollm2_checkpoint):
    proc = node(tmp_path, "limited", [], "--layers", "0:2", "--rate-limit", "5", "--rate-window", "60")
    proc.start().ready()
    try:
        remaining = []
        for _ in range(5):
            response = httpx.get(f"{proc.url}/v1/models")
            assert response.status_code == 200 and response.headers["X-RateLimit-Limit"] == "5"
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        limited = httpx.get(f"{proc.url}/v1/models")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert int(limited.headers["X-RateLimit-Reset"]) >= 1
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=f"{proc.url}/v1", api_key="x", max_retries=0).models.list()
        assert httpx.get(f"{proc.url}/health").status_code == 200  # exempt
        assert httpx.get(f"{proc.url}/metrics").status_code == 200
        # a POST refused unread closes its connection; the client's next request gets an answer
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for _ in range(5):
                refused = client.post("/v1/completions", json={"model": "smollm2", "prompt": "x" * 50_000})
                assert refused.status_code == 429 and refused.headers["Connection"] == "close"
                assert client.get("/health").status_code == 200
    finally:
        proc.stop(signal.SIGINT)
