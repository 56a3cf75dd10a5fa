"""The API of a node whose model is split over three ``hydra run`` processes (blocks 0:10 on
the API node, 10:20 and 20:30 on two others): HTTP temperature-0 output equals the
coordinator's greedy output, a client hanging up mid-stream frees every peer's session, and
the stages earn HYDRA from a signpost's token federation that their operators can stake."""

import json
import subprocess

import httpx
import openai
import pytest
import trio

from hydra.coordinator.generation import Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.service import open_dht_peer
from hydra.generate import wait_for_route
from hydra.models.catalog import load_catalog
from tests.factories import discovery
from tests.swarm import EXACT, HYDRA, WORK, signpost_and_nodes, wait_until

pytestmark = pytest.mark.slow

PROMPT = "The three primary colours are"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, smollm2_checkpoint):
    spans = {"p0": "0:10", "p1": "10:20", "p2": "20:30"}
    tmp = tmp_path_factory.mktemp("api-pipeline")
    # the signpost also keeps the token log (a federation of one) and the nodes claim HYDRA often
    with signpost_and_nodes(tmp, spans, "--mint-every", "1", signpost_args=("--ledger",)) as (_, boot, nodes):
        yield boot, list(nodes.values())


def stage(proc) -> dict:
    return proc.get("/v1/network/status")["stage"]


async def test_http_greedy_equals_the_coordinators_greedy_output(pipeline):
    boot, nodes = pipeline
    api = nodes[0]
    async with open_dht_peer(None, "127.0.0.1", 0, discovery(boot)) as client:
        coordinator = Coordinator(client.host, client.dht, load_catalog())
        await wait_for_route(coordinator, "smollm2", 60.0)
        direct = await coordinator.generate(
            GenerationRequest("smollm2", prompt=PROMPT, params=SamplingParams(max_tokens=32))
        )
    assert len(direct.route) == 3
    served_before = [stage(p)["steps_served"] for p in nodes]
    ai = openai.OpenAI(base_url=f"{api.url}/v1", api_key="unused", max_retries=0)
    over_http = await trio.to_thread.run_sync(
        lambda: ai.completions.create(model="smollm2", prompt=PROMPT, max_tokens=32, temperature=0)
    )
    assert over_http.choices[0].text == direct.text
    assert over_http.usage.completion_tokens == direct.completion_tokens
    served_after = [stage(p)["steps_served"] for p in nodes]
    pairs = zip(served_before, served_after, strict=True)
    assert all(after > before for before, after in pairs), "not 3 hops"
    # the API node paid the next stages for its HTTP request, and the last stage earned from
    # both generations: what each node served shows in its barter balance
    last = httpx.get(f"{nodes[2].url}/v1/account/balance", timeout=10).json()["barter"]
    assert last["micro_credits"] > 0 and last["micro_credits"] == round(last["credits"] * 1_000_000)


def test_hydra_generate_joins_the_swarm_and_prints_the_greedy_text(pipeline, tmp_path):
    """``hydra generate --bootstrap``: a throwaway coordinator finds the three-node route
    through the signpost and prints what the API answers at temperature 0."""
    boot, nodes = pipeline
    done = subprocess.run([*HYDRA, "generate", "--home", str(tmp_path), "--bootstrap", boot, *WORK, *EXACT,
                           "--max-tokens", "12", PROMPT], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    served = httpx.post(f"{nodes[0].url}/v1/completions", timeout=60, json={
        "model": "smollm2", "prompt": PROMPT, "max_tokens": 12, "temperature": 0})
    assert done.stdout.rstrip("\n") == served.json()["choices"][0]["text"]
    assert "route 3 hop(s)" in done.stderr, done.stderr


def test_a_client_hanging_up_mid_stream_frees_the_sessions(pipeline):
    _, nodes = pipeline
    body = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 400, "stream": True}
    with httpx.stream("POST", f"{nodes[0].url}/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
        assert all(stage(p)["sessions"] == 1 for p in nodes), [stage(p) for p in nodes]
    # the response is closed: hypercorn cancels the generation, the pipeline closes its streams
    assert wait_until(lambda: all(stage(p)["sessions"] == 0 for p in nodes), timeout=10)
    assert nodes[0].get("/v1/network/status")["stage"]["sessions"] == 0


def test_stages_earn_hydra_that_their_operator_stakes_with_hydra_account(pipeline):
    _, nodes = pipeline
    last = nodes[2]  # served every generation above as the route's last stage

    def hydra() -> dict:
        return last.get("/v1/account/balance")["hydra"]

    assert wait_until(lambda: hydra().get("hydra", 0) > 0, 30), hydra()
    assert last.get("/v1/network/status")["economy"]["hydra"]["federation"] == {"members": 1, "k": 1}
    half = f"{hydra()['hydra'] / 2:.6f}"
    account = [*HYDRA, "account", "--api", last.url]
    staked = subprocess.run([*account, "stake", half], capture_output=True, text=True, timeout=60)
    assert staked.returncode == 0, staked.stderr
    shown = subprocess.run([*account, "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(shown.stdout)["hydra"]["staked"] == float(half)
    refused = httpx.post(f"{last.url}/v1/hydra/stake", json={"amount": 10**6}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "overdraft"
    over_cli = subprocess.run([*account, "unstake", "999999"], capture_output=True, text=True, timeout=60)
    assert over_cli.returncode == 1 and "overdraft" in over_cli.stderr
