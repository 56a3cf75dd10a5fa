#!/usr/bin/env python3
"""Economy benchmark on the embedded SmolLM2 (fp32, CPU), in one run on one machine.

1. Decode cost: a 3-peer pipeline (real libp2p hosts on 127.0.0.1, in this process, all
   following a one-member token federation) generates the same greedy tokens three ways,
   alternating: unpaid (the coordinator sends no receipts: the baseline), with receipts (barter
   credits), and with receipts plus HYDRA channel updates (each payer pays its successor over
   a channel). Prints decode tokens/s and the ratio to unpaid (target: at least 0.98), and the
   time each payment (receipt, countersignature, channel update) takes.
2. Throughput of the books: barter-ledger postings per second (SQLite, WAL, synchronous=FULL,
   one transaction each), token-log entries replayed and verified per second, and events
   sealed per second by a federation over real hosts.

Usage: scripts/bench_economy.py [--tokens 300] [--runs 3] [--postings 2000]
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import argparse
import secrets
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import torch
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from rich.console import Console
from rich.table import Table

from hydra.coordinator.generation import Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.config import DiscoveryConfig
from hydra.dht.service import DhtPeer, open_dht_peer
from hydra.economy.config import TokenConfig
from hydra.economy.federation import FederationMember
from hydra.economy.ledger import Ledger
from hydra.economy.receipts import countersign, sign
from hydra.economy.service import TokenService
from hydra.economy.tokenlog import MICRO, TokenLog, cosign, sign_event
from hydra.generate import wait_for_route
from hydra.models.catalog import load_catalog
from hydra.node import start_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.stage.limits import StageLimits
from hydra.verification.config import VerificationConfig
from protocols import inference, receipt
from protocols.token import Entry, Event, Genesis, Sealed

CPU = torch.device("cpu")
MODES = ("unpaid", "receipts", "receipts + channels")


class Unpaid(Coordinator):
    """The baseline: a coordinator that sends no receipts (stages still serve up to their
    unreceipted allowance, which a benchmark run stays under)."""

    async def pay(self, hop: inference.Hop, body: receipt.ReceiptBody) -> bool:
        return True


class Timed(Coordinator):
    """Records how long each payment to the first stage takes."""

    payments: list[float]

    async def pay(self, hop: inference.Hop, body: receipt.ReceiptBody) -> bool:
        started = time.perf_counter()
        try:
            return await super().pay(hop, body)
        finally:
            self.payments.append(time.perf_counter() - started)


def peer_id(keys) -> str:
    return ID.from_pubkey(keys.public_key).to_base58()


async def funded(service: TokenService, tokens: int) -> None:
    """Mint ``service``'s node some HYDRA with a receipt from a made-up payer."""
    assert service.wallet is not None
    payer = create_new_key_pair()
    body = receipt.ReceiptBody(
        peer_id(payer), service.wallet.peer_id, secrets.token_bytes(16), "bench", 0, 1, tokens, tokens, 0,
        bytes(16),
    )
    signed = sign(payer, body)
    service.earned(signed, countersign(service.identity, signed))
    await service.wallet.mint_pending()


async def decode_cost(checkpoint: Path, tokens: int, runs: int, home: Path) -> None:
    spec = load_catalog().resolve("smollm2")
    async with AsyncExitStack() as stack:
        signpost = await stack.enter_async_context(open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig()))
        genesis = Genesis((signpost.peer_id,), 1)
        member = FederationMember(
            signpost.keypair,
            TokenLog(genesis, home / "member.db"),
            {signpost.peer_id: tuple(signpost.dht.own_addrs())},
        )
        member.attach(signpost.host)
        token = TokenConfig(federation=(signpost.multiaddrs()[0],), channel_deposit=6 * MICRO)
        bootstrap = (signpost.multiaddrs()[0],)

        async def follower(peer: DhtPeer, name: str) -> TokenService:
            (home / name).mkdir()
            service = TokenService(peer.host, peer.keypair, home / name, token)
            assert await service.connect() is not None
            await funded(service, 8000)
            return service

        for i, span in enumerate(((0, 10), (10, 20), (20, 30))):
            peer = await stack.enter_async_context(
                open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig(bootstrap))
            )
            stage, announcer, _ = await start_stage(
                peer, spec, checkpoint, span, torch.float32, CPU, StageLimits()
            )
            stage.tokens = await follower(peer, f"stage-{i}")
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            await nursery.start(announcer.run)
        client = await stack.enter_async_context(
            open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig(bootstrap))
        )
        client_tokens = await follower(client, "client")
        off = VerificationConfig(verify_rate=0.0)
        common = {"checkpoints": {spec.id: checkpoint}, "verification": off}
        coordinators: dict[str, Coordinator] = {
            "unpaid": Unpaid(client.host, client.dht, load_catalog(), **common),
            "receipts": Timed(client.host, client.dht, load_catalog(), **common),
            "receipts + channels": Timed(
                client.host, client.dht, load_catalog(), tokens=client_tokens, **common
            ),
        }
        for coordinator in coordinators.values():
            coordinator.payments = []
            await wait_for_route(coordinator, spec.id, 30)
        request = GenerationRequest(
            spec.id, prompt="The history of the printing press", params=SamplingParams(max_tokens=tokens)
        )
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        outputs = set()
        for coordinator in coordinators.values():
            await coordinator.generate(request)  # warm-up (and the channels get opened)
            coordinator.payments.clear()
        for _ in range(runs):  # alternating, so drift on a shared machine hits all alike
            for mode, coordinator in coordinators.items():
                done = await coordinator.generate(request)
                rates[mode].append(done.decode_tokens_per_s)
                outputs.add(tuple(done.token_ids))
        assert len(outputs) == 1, "paying changed the tokens"
        base = statistics.median(rates["unpaid"])
        table = Table(title=f"3-peer pipeline, SmolLM2 fp32, {tokens} tokens, median of {runs}")
        for column in (
            "payment",
            "decode tokens/s",
            "vs unpaid",
            "ms per payment",
            "payments per run",
            "payment time / decode time",
        ):
            table.add_column(column)
        for mode in MODES:
            rate, paid = statistics.median(rates[mode]), coordinators[mode].payments
            per = statistics.median(paid) if paid else 0.0
            share = sum(paid) / runs / (tokens / rate)
            table.add_row(
                mode,
                f"{rate:.2f}",
                f"{rate / base:.3f}",
                f"{1000 * per:.1f}" if paid else "-",
                f"{len(paid) / runs:.1f}",
                f"{100 * share:.2f}%",
            )
        Console(width=200).print(table)
        wallet = client_tokens.wallet
        assert wallet is not None
        mine = next((ref for ref, c in wallet.log.state.channels.items() if c.opener == wallet.peer_id), None)
        held = wallet.channels.held(mine) if mine else None
        if held:
            paid = held.state.paid / MICRO
            print(f"the client's channel to its first stage: {held.state.nonce + 1} updates, {paid} HYDRA")


def postings(count: int, home: Path) -> None:
    ledger = Ledger(home / "ledger.db")
    started = time.perf_counter()
    for i in range(count):
        ledger.post_receipt(f"s{i % 64}", i // 64, (i // 64 + 1) * 100, payer="self", payee="peer:x")
    barter = count / (time.perf_counter() - started)

    keys = create_new_key_pair()
    genesis = Genesis((peer_id(keys),), 1)
    writer = TokenLog(genesis, home / "log.db")
    author = create_new_key_pair()
    for i in range(count):
        event = Event("mint", peer_id(author), 100, ref=i.to_bytes(32, "big"))
        entry = Entry(writer.length, writer.head, 1.0, sign_event(author, event))
        writer.append(Sealed(entry, (cosign(keys, entry),)))
    started = time.perf_counter()
    TokenLog(genesis, home / "log.db")
    replay = count / (time.perf_counter() - started)
    print(f"ledger postings per second: {barter:.0f} (barter, one durable transaction each)")
    print(f"token log entries replayed and verified per second: {replay:.0f}")


async def sealing(count: int, home: Path) -> None:
    async with AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig()))
            for _ in range(3)
        ]
        genesis = Genesis(tuple(p.peer_id for p in peers), 2)
        addrs = {p.peer_id: tuple(p.dht.own_addrs()) for p in peers}
        for i, peer in enumerate(peers):
            FederationMember(peer.keypair, TokenLog(genesis, home / f"fed-{i}.db"), addrs).attach(peer.host)
        client = await stack.enter_async_context(open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig()))
        (home / "sealer").mkdir()
        service = TokenService(
            client.host, client.keypair, home / "sealer", TokenConfig(federation=(peers[0].multiaddrs()[0],))
        )
        assert await service.connect() is not None
        await funded(service, 8000)
        started = time.perf_counter()
        for _ in range(count):
            await service.stake(1)
        rate = count / (time.perf_counter() - started)
        print(f"events sealed per second by a 3-member federation (k=2): {rate:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokens", type=int, default=300, help="generated per run (300 crosses a mid-run receipt)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postings", type=int, default=2000)
    args = parser.parse_args()
    checkpoint = resolve_checkpoint(load_catalog().resolve("smollm2"))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        trio.run(decode_cost, checkpoint, args.tokens, args.runs, home)
        postings(args.postings, home)
        trio.run(sealing, max(10, args.postings // 20), home)


if __name__ == "__main__":
    main()
