"""A signpost and six nodes started through the ``hydra`` CLI as real processes on 127.0.0.1:
discovery through the DHT, rejection of bad records, TTL expiry, late joiners, clean exit.

Announce interval 1 s and TTL 3 s keep the test fast; the logic is the production logic."""

import base64
import signal
import subprocess
import sys
import time

import httpx
import pytest
import trio

from hydra.p2p.host import ensure_port_free
from hydra.p2p.identity import peer_id
from hydra.p2p.streams import RemoteError, request
from protocols import kad
from protocols.codec import Error
from protocols.errors import ErrorCode
from protocols.framing import encode_frame
from tests.factories import forged_for, keypair, signed, unworked
from tests.rawpeer import client_host, kad_stream
from tests.swarm import HydraProcess, multiaddr_of, node, signpost_and_nodes, wait_until

pytestmark = pytest.mark.slow

MODEL = "openhydra-smollm2-135m"
TIMING = ["--announce-interval", "1", "--record-ttl", "3"]
SPANS = ["0:10", "10:20", "20:30"]


@pytest.fixture(scope="module", autouse=True)
def _embedded_model_converted(smollm2_checkpoint):
    """Nodes load the embedded model at start: convert it once before any starts."""


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swarm")
    spans = {f"node{i}": SPANS[i % 3] for i in range(6)}
    with signpost_and_nodes(tmp, spans, *TIMING) as (sp, boot, nodes):
        yield tmp, sp, boot, list(nodes.values())


def ids_seen(proc: HydraProcess) -> set[str]:
    return {p["peer_id"] for p in proc.get("/lookup", model=MODEL)["peers"]}


def peer_ids(nodes: list[HydraProcess]) -> set[str]:
    return {n.peer_id for n in nodes}


def test_every_node_finds_every_other_nodes_record(swarm):
    _, sp, _, nodes = swarm
    everyone = peer_ids(nodes)
    assert len(everyone) == 6
    assert wait_until(lambda: all(ids_seen(n) >= everyone for n in [sp, *nodes]), 20), {
        n.url: len(ids_seen(n)) for n in nodes
    }
    peers = nodes[0].get("/lookup", model=MODEL)["peers"]
    spans = {tuple(p["layers"]) for p in peers if p["peer_id"] in everyone}
    assert spans == {(0, 10), (10, 20), (20, 30)}
    by_alias = sp.get("/lookup", model="SmolLM2")  # aliases resolve, as in the APIs
    assert by_alias["model"] == MODEL and {p["peer_id"] for p in by_alias["peers"]} >= everyone
    assert {p["peer_id"] for p in sp.get("/peers")["peers"]} >= everyone


def test_bad_records_are_rejected_by_every_node_which_keeps_serving(swarm):
    _, sp, _, nodes = swarm
    victim = nodes[0].peer_id
    forger, stranger = keypair(), keypair()
    bad = [forged_for(stranger, forger), signed(stranger, ttl=-5, issued_at=time.time() - 10),
           unworked(stranger)]

    async def attack() -> None:
        async with client_host() as host:
            for target in [sp, *nodes]:
                stream = await kad_stream(host, multiaddr_of(target))
                for record in bad:
                    key = f"model/{MODEL}"
                    with pytest.raises(RemoteError) as info:
                        await request(stream, kad.Store(key=key, records=(record,)), kad.REPLIES)
                    assert info.value.code == ErrorCode.INVALID_RECORD
                await stream.stream.write(encode_frame(b"\xff\x00garbage"))
                reply = await stream.receive(kad.REPLIES)
                assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_MSGPACK

    trio.run(attack)

    # The HTTP adapter applies the same validation: a record "for" the victim, signed by
    # someone else, is refused.
    forged_victim = forged_for(stranger, forger)
    body = {k: base64.b64encode(getattr(forged_victim, k)).decode() for k in ("body", "signature")}
    answer = httpx.post(f"{sp.url}/announce", json=body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_record"
    assert httpx.post(f"{sp.url}/announce", content=b"{not json").status_code == 400

    stranger_id = peer_id(stranger).to_base58()
    for n in [sp, *nodes]:
        seen = ids_seen(n)  # still answering lookups, and never with the bad records
        assert stranger_id not in seen and victim in seen


def test_http_announce_stores_a_valid_record_in_the_dht(swarm):
    _, sp, _, nodes = swarm
    kp = keypair()
    record = signed(kp, layer_start=3, layer_end=7)
    body = {k: base64.b64encode(getattr(record, k)).decode() for k in ("body", "signature")}
    answer = httpx.post(f"{sp.url}/announce", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored_on"] >= 3
    new_id = peer_id(kp).to_base58()
    assert all(new_id in ids_seen(n) for n in nodes)


def test_a_stopped_node_disappears_after_its_ttl(swarm):
    tmp, sp, boot, nodes = swarm
    doomed = node(tmp, "doomed", [boot], *TIMING).start().ready()
    doomed_id = doomed.get("/v1/network/status")["peer_id"]
    assert wait_until(lambda: all(doomed_id in ids_seen(n) for n in nodes), 15)
    doomed.stop(signal.SIGKILL)  # no goodbye: only the TTL can remove it
    killed_at = time.monotonic()
    assert wait_until(lambda: not any(doomed_id in ids_seen(n) for n in [sp, *nodes]), 15)
    assert time.monotonic() - killed_at <= 3 + 5  # TTL plus one lookup round of slack
    assert all(len(ids_seen(n)) >= 6 for n in nodes)  # the others are still there


def test_late_joiner_knowing_only_the_signpost_finds_everyone(swarm):
    tmp, _, boot, nodes = swarm
    everyone = peer_ids(nodes)
    late = node(tmp, "late", [boot], *TIMING).start().ready()
    try:
        assert ids_seen(late) >= everyone
        status = late.get("/v1/network/status")
        assert status["signposts"] == {"configured": 1, "answered": 1}
        assert status["routing_table"] >= 6
    finally:
        assert late.stop(signal.SIGINT) == 0


def test_sigint_shuts_down_cleanly_and_frees_the_ports(swarm):
    tmp, _, boot, _ = swarm
    proc = node(tmp, "brief", [boot], *TIMING).start().ready()
    assert proc.stop(signal.SIGINT, timeout=10) == 0
    for port in (proc.p2p_port, proc.http_port):
        ensure_port_free("127.0.0.1", port)  # nothing left listening
    assert "Traceback" not in proc.output()


def test_identity_is_stable_across_restarts_and_unsafe_keys_are_refused(tmp_path):
    proc = node(tmp_path, "stable", []).start().ready()
    first = proc.get("/v1/network/status")["peer_id"]
    proc.stop()
    proc.start().ready()
    assert proc.get("/v1/network/status")["peer_id"] == first
    proc.stop()
    cli = [sys.executable, "-m", "hydra.cli"]
    home = str(proc.home)
    assert subprocess.run([*cli, "id", "--home", home], capture_output=True,
                          text=True).stdout.strip() == first
    (proc.home / "identity.key").chmod(0o644)
    refused = subprocess.run([*cli, "run", "--home", home], capture_output=True, text=True)
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
