"""Fuzzing a live node: hostile messages on every libp2p protocol and hostile HTTP requests.

A real node in this process (tiny Llama stage on a libp2p host with its DHT, plus the HTTP
API over a coordinator) receives, per protocol, ``count`` messages that are seeded mutations
of valid requests or structurally valid maps with random field values; and ``count`` HTTP
requests across the API's endpoints, mutated or random JSON. Every answer must be a typed
error or a valid reply (never a crash, a 5xx or a hang), and afterwards the node must still
produce the same generation as before.

CI runs it with a small budget (tests/integration/test_fuzz_budget.py); the full run:
    .venv/bin/python -m tests.fuzz_harness --count 10000
"""

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from hydra.api.app import create_app
from hydra.api.config import APIConfig
from hydra.api.server import serve_http
from hydra.coordinator.generation import GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.economy.channels import sign_state
from hydra.economy.config import TokenConfig
from hydra.economy.federation import MAX_FRAME
from hydra.economy.receipts import sign
from hydra.economy.tokenlog import sign_event
from hydra.p2p.identity import peer_id
from hydra.p2p.limits import PeerRateLimiter
from hydra.p2p.streams import FramedStream, open_stream
from hydra.stage.limits import StageLimits
from hydra.stage.links import RECEIPT_LINK, VERIFY_LINK, RemoteLink
from hydra.verification.commitments import CHALLENGE, AuditSeal
from protocols import channel, inference, kad, receipt, token, verify
from protocols.channel import ChannelState
from protocols.codec import Error, encode
from protocols.errors import ErrorCode
from protocols.framing import encode_frame
from protocols.ids import CHANNEL, TOKEN_LOG
from tests.factories import keypair, signed
from tests.integration.test_stage_protocol_real_hosts import hop_of, link_to, wrapped
from tests.peers import coordinator_for, spec_for, stage_peer
from tests.rawpeer import RawSession, client_host, kad_stream, mutate
from tests.swarm import free_port
from tests.tiny_models import save_tiny_model, tiny_llama_config
from tests.tokens import federation

SPEC = spec_for("tiny-llama", 6)
UNLIMITED = StageLimits(peer_rate=1e9, peer_burst=1e9)
REPLY_TYPES = {"pong", "nodes", "stored", "opened", "hidden", "closed", "revealed", "countersigned",
               "sealed", "vote", "entries", "accepted", "genesis", "channel_countersigned"}
HTTP_PATHS = ["/v1/chat/completions", "/v1/completions", "/api/generate", "/api/chat",
              "/api/show", "/announce", "/v1/models", "/api/tags", "/lookup", "/v1/hydra/stake",
              "/v1/hydra/unstake", "/v1/hydra/channels/open", "/v1/hydra/channels/close"]


@dataclass
class Report:
    replies: dict[str, Counter] = field(default_factory=dict)
    http: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{proto}: {sum(c.values())} messages, answers {dict(c.most_common(6))}"
                 for proto, c in self.replies.items()]
        lines.append(f"http: {sum(self.http.values())} requests, statuses {dict(self.http)}")
        return "\n".join(lines) + f"\n{self.seconds:.1f}s"


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value: scalars of every kind, nested a little."""
    kind = rng.randrange(9 if depth < 2 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-2**63, 2**64 - 1)
    if kind == 3:
        return rng.random() * 10.0 ** rng.randint(-3, 300)
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randint(0, 12)))
    if kind == 5:
        return rng.randbytes(rng.randint(0, 40))
    if kind == 6:
        return rng.randint(-5, 5)
    if kind == 7:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["t", "key", "model", "hidden", "shape", "data", "x"]
    return {rng.choice(keys): junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def hostile_message(rng: random.Random, seeds: list[bytes], types: list[str]) -> bytes:
    if rng.random() < 0.6:
        return mutate(rng, rng.choice(seeds))
    body = msgpack.unpackb(rng.choice(seeds), raw=False)  # a valid shape, random values
    for key in rng.sample(sorted(body), k=min(len(body), rng.randint(1, 3))):
        body[key] = junk(rng)
    if rng.random() < 0.2:
        body["t"] = rng.choice(types)
    return msgpack.packb(body, use_bin_type=True)


async def fuzz_protocol(stream, seeds: list[bytes], types: list[str], count: int,
                        rng: random.Random, replies_schema, reopen) -> Counter:
    seen: Counter = Counter()
    for _ in range(count):
        await stream.stream.write(encode_frame(hostile_message(rng, seeds, types), inference.MAX_FRAME))
        with trio.fail_after(10):
            reply = await stream.receive(replies_schema)
        if reply is None:  # the node ended a stream it could no longer parse: start another
            seen["stream_reset"] += 1
            stream = await reopen()
            continue
        kind = reply.code if isinstance(reply, Error) else reply.TYPE
        assert kind in REPLY_TYPES or kind in {c.value for c in ErrorCode}, kind
        assert kind != ErrorCode.INTERNAL, "a handler crashed"
        seen[kind] += 1
    return seen


def hostile_http(rng: random.Random, valid: list[dict]) -> tuple[str, str, bytes]:
    path = rng.choice(HTTP_PATHS)
    if path in ("/v1/models", "/api/tags", "/lookup"):
        query = "?model=" + "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randint(0, 300)))
        return "GET", path + (query if path == "/lookup" else ""), b""
    body = dict(rng.choice(valid))
    roll = rng.random()
    if roll < 0.4:
        return "POST", path, mutate(rng, json.dumps(body).encode())
    for key in rng.sample(sorted(body), k=min(len(body), rng.randint(1, 3))):
        value = junk(rng)
        body[key] = value.hex() if isinstance(value, bytes) else value
    body.setdefault("max_tokens", 2)
    raw = json.dumps(body, default=str).encode()  # NaN / Infinity included on purpose
    return "POST", path, raw


async def run(count: int, http_count: int, checkpoint: Path, seed: int = 7) -> Report:
    rng = random.Random(seed)
    report = Report()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        async with federation(Path(tmp), n=1, k=1) as fed:
            economy = TokenConfig(federation=(fed.multiaddr(),))
            async with stage_peer(SPEC, checkpoint, (0, 6), limits=UNLIMITED, kad_rate=1e9,
                                  token=economy) as target, \
                    coordinator_for(SPEC, checkpoint, target.multiaddr, token=economy) as coordinator:
                await attack(target, coordinator, fed, count, http_count, rng, report)
    report.seconds = time.monotonic() - started
    return report


async def attack(target, coordinator, fed, count: int, http_count: int, rng: random.Random,
                 report: Report) -> None:
    request = GenerationRequest(SPEC.id, prompt="fuzz", params=SamplingParams(max_tokens=6))
    async with trio.open_nursery() as nursery:
        before = await coordinator.generate(request)
        port = free_port()
        app = create_app(coordinator.dht, dict, coordinator.catalog, coordinator,
                         APIConfig(rate_limit=10**9, default_max_tokens=2))
        await nursery.start(serve_http, app, "127.0.0.1", port)
        async with client_host() as host:
            kad_seeds = [encode(kad.Ping(sender_addrs=("/ip4/127.0.0.1/tcp/9",))),
                         encode(kad.FindNode(key="model/m")), encode(kad.FindValue(key="swarm")),
                         encode(kad.Store(key="swarm", records=(signed(keypair()),)))]

            async def kad_open():
                return await kad_stream(host, target.multiaddr)

            report.replies["kad"] = await fuzz_protocol(
                await kad_open(), kad_seeds, ["ping", "find_node", "find_value", "store", "pong"],
                count, rng, kad.REPLIES, kad_open)

            async def inference_open():
                link = await link_to(host, target)
                await link.call(session.route.open, 10.0)
                return link.stream

            session = RawSession(host, wrapped([target], max_length=64))
            inference_seeds = [encode(session.route.open), encode(session.step(0)),
                               encode(session.step(1, tokens=2)), encode(inference.CloseSession())]
            report.replies["inference"] = await fuzz_protocol(
                await inference_open(), inference_seeds, ["open", "step", "close", "hidden"],
                count, rng, inference.REPLIES, inference_open)

            # challenges for a committed step of a live session, and for sessions that do not exist
            audited = RawSession(host, wrapped([target], max_length=64))
            live = await link_to(host, target)
            await live.call(audited.route.open, 10.0)
            await live.call(audited.step(0, tokens=3), 10.0)
            sid, report_key = audited.route.session_ids[0], audited.route.report_keys[0]
            layer = AuditSeal(report_key, sid).seal(encode(verify.Audit((0,))), CHALLENGE)

            async def verify_open():
                return (await RemoteLink.open(host, hop_of(target), 5.0, VERIFY_LINK)).stream

            verify_seeds = [encode(verify.Challenge(sid, layer)),
                            encode(verify.Challenge(b"s" * 16, b"not a layer"))]
            report.replies["verify"] = await fuzz_protocol(
                await verify_open(), verify_seeds, ["challenge", "revealed", "audit"],
                count, rng, verify.REPLIES, verify_open)
            await live.aclose()
            await fuzz_economy(host, target, fed, count, rng, report)
        valid = [
            {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2, "stream": True},
            {"model": "tiny-llama", "prompt": "hi", "options": {"num_predict": 2}},
            {"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}], "stream": False,
             "options": {"num_predict": 2}},
            {"name": "tiny-llama"},
            {"amount": 1.5},
            {"peer": "12D3KooWx", "deposit": "2"},
            {"id": "00" * 16},
        ]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(http_count):
                method, path, body = hostile_http(rng, valid)
                response = await client.request(method, path, content=body or None)
                await response.aread()
                assert response.status_code < 500, (path, body[:200], response.text[:300])
                report.http[response.status_code] += 1
        after = await coordinator.generate(request)
        assert after.token_ids == before.token_ids, "the node no longer generates the same text"
        nursery.cancel_scope.cancel()


async def fuzz_economy(host, target, fed, count: int, rng: random.Random, report: Report) -> None:
    """Receipts and channel updates at the stage, submissions and co-signing requests at a
    federation member (signed by the wrong peer, stale, malformed): typed errors, and the
    member's log accepts none of it."""
    payer, payee = keypair(), target.peer_id
    body = receipt.ReceiptBody(peer_id(payer).to_base58(), payee, b"s" * 16, SPEC.id, 0, 6, 3, 3, 0,
                               bytes(16))

    async def receipt_open():
        return (await RemoteLink.open(host, hop_of(target), 5.0, RECEIPT_LINK)).stream

    receipt_seeds = [encode(sign(payer, body))]
    report.replies["receipt"] = await fuzz_protocol(
        await receipt_open(), receipt_seeds, ["receipt", "countersigned"], count, rng, receipt.REPLIES,
        receipt_open)

    async def raw_open(peer: str, addrs: tuple[str, ...], protocol: str, max_frame: int) -> FramedStream:
        raw = await open_stream(host, ID.from_base58(peer), [Multiaddr(a) for a in addrs], protocol, 5.0)
        return FramedStream(raw, max_frame)

    unlimited = PeerRateLimiter(1e9, 1e9)  # the fuzz checks answers, not rate limits
    target.stage.tokens.wallet.channels.attach(target.dht_peer.host, unlimited)
    fed.members[0].attach(fed.peers[0].host, unlimited)
    state = ChannelState(b"c" * 16, 1, 10)
    channel_seeds = [encode(channel.Update(state.to_bytes(), sign_state(payer, state)))]
    stage_addrs = tuple(target.dht_peer.dht.own_addrs())

    async def channel_open():
        return await raw_open(payee, stage_addrs, CHANNEL, 4096)

    report.replies["channel"] = await fuzz_protocol(
        await channel_open(), channel_seeds, ["channel_update", "channel_countersigned"], count, rng,
        channel.REPLIES, channel_open)
    member = fed.members[0]
    stake = sign_event(payer, token.Event("stake", peer_id(payer).to_base58(), 5))
    entry = token.Entry(0, member.log.head, time.time(), stake)
    tokenlog_seeds = [encode(token.Submit(stake)), encode(token.Fetch(0)), encode(token.GetGenesis()),
                      encode(token.Propose(entry)), encode(token.Append(token.Sealed(entry, ())))]

    async def tokenlog_open():
        return await raw_open(member.peer_id, fed.addrs[member.peer_id], TOKEN_LOG, MAX_FRAME)

    before = member.log.length
    report.replies["tokenlog"] = await fuzz_protocol(
        await tokenlog_open(), tokenlog_seeds, ["submit", "propose", "append", "fetch", "sealed"], count, rng,
        token.REPLIES, tokenlog_open)
    assert member.log.length == before, "hostile submissions were appended"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="messages per protocol and HTTP requests")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_tiny_model(tiny_llama_config(), Path(tmp) / "tiny-llama")
        print(trio.run(run, args.count, args.count, checkpoint, args.seed).summary())


if __name__ == "__main__":
    main()
