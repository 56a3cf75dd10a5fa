"""Auto-promotion on a swarm whose coverage changes, with real ``hydra run`` processes: two
nodes that choose their model themselves start on the small catalog model while a pinned peer
serves the larger one; once that peer leaves, one node moves to the larger model and answers
requests for it, and the other (``--no-promote``) stays and says it could, until the gap is
filled. The mover is paused (SIGSTOP) while the stayer finds the gap, so neither races the
other to it.

The catalog ($HYDRA_CATALOG) holds two tiny random Llamas whose weights sit in the
conversion cache ($HYDRA_CACHE), as a model a node has served before would."""

import shutil
import signal

import httpx
import pytest

from tests.swarm import multiaddr_of, node, signpost, wait_until
from tests.tiny_models import save_tiny_model, tiny_catalog, tiny_llama_config

pytestmark = pytest.mark.slow

SMALL, LARGE = "tiny-small", "tiny-large"
TIMING = ["--announce-interval", "1", "--record-ttl", "3", "--rate-limit", "100000"]  # polled often


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("promotion")
    for seed, model_id in enumerate((SMALL, LARGE)):
        save_tiny_model(tiny_llama_config(), tmp / "cache" / "models" / model_id, seed=seed)
    catalog = tiny_catalog(tmp / "catalog.json", SMALL, {SMALL: 1_000, LARGE: 2_000})
    yield {"HYDRA_CATALOG": str(catalog), "HYDRA_CACHE": str(tmp / "cache")}
    shutil.rmtree(tmp / "cache", ignore_errors=True)


def status(proc) -> dict:
    return proc.get("/v1/network/status")


def test_a_node_moves_to_the_larger_model_the_swarm_loses(environment, tmp_path):
    procs = []

    def started(proc):
        proc.env.update(environment)
        procs.append(proc.start())
        return proc

    try:
        sp = started(signpost(tmp_path, "signpost")).ready()
        boot = multiaddr_of(sp)
        pinned = started(node(tmp_path, "pinned", [boot], "--model", LARGE, *TIMING)).ready()
        assert wait_until(lambda: sp.get("/lookup", model=LARGE)["peers"], 30), "the pinned peer is not found"
        mover = started(node(tmp_path, "mover", [boot], *TIMING))
        stayer = started(node(tmp_path, "stayer", [boot], "--no-promote", *TIMING))
        for proc in (mover, stayer):
            proc.ready(timeout=120)
            assert status(proc)["model"] == SMALL  # the larger model has a peer: no reason to leave

        # the mover is paused first, so that the stayer sees the gap before the mover fills it
        mover.proc.send_signal(signal.SIGSTOP)
        pinned.stop()
        assert wait_until(lambda: status(stayer)["promotion"]["could"] == LARGE, 30), stayer.output()
        assert status(stayer)["model"] == SMALL
        assert "could move from tiny-small to tiny-large" in stayer.output()
        mover.proc.send_signal(signal.SIGCONT)
        assert wait_until(lambda: status(mover)["model"] == LARGE, 60), mover.output()
        moved = status(mover)
        assert moved["layers"] == [0, 6] and moved["promotion"]["moves"][0]["from"] == SMALL
        # the gap is filled: the stayer no longer says it could
        assert wait_until(lambda: status(stayer)["promotion"]["could"] is None, 30), stayer.output()

        # the promoted node serves requests for the larger model, through its own new blocks
        reply = httpx.post(f"{mover.url}/v1/completions", timeout=60, json={
            "model": LARGE, "prompt": "abc", "max_tokens": 5, "temperature": 0})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == LARGE and reply.json()["usage"]["completion_tokens"] == 5
        assert status(mover)["stage"]["tokens_served"] > 0
        assert mover.get("/readyz") == {"ready": True, "model": LARGE}  # what its clients default to
    finally:
        for proc in procs:
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGCONT)  # a test failing while the mover is paused
                proc.stop()
