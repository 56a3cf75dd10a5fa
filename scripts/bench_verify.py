#!/usr/bin/env python3
"""Verification benchmark on the embedded SmolLM2 (fp32, CPU), in one run on one machine.

1. Detection: how many requests (of a prompt and 8 generated tokens) a stage that always
   cheats survives, per audit rate and kind of cheat, over ``--trials`` seeded trials. The
   outputs are real: a span of blocks run on a fixed token sequence, honestly and cheating;
   each audited step is judged by the real comparison against a verifier of the same
   precision. Prints the median and 99th percentile of requests until flagged.
2. Cost: decode tokens/s of a 3-peer pipeline (real libp2p hosts on 127.0.0.1, in this
   process) with ``--verify-rate 0.1`` against verification off, and the commitment bytes the
   coordinator receives per token per stage.

``--calibrate`` prints what the catalog records per model for verification and exits: the
massive-activation channels, and the fp32-vs-bf16 bounds (3x the largest honest difference).

Usage: scripts/bench_verify.py [--trials 200] [--tokens 32] [--runs 3] [--calibrate]
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import argparse
import dataclasses
import json
import statistics
from contextlib import AsyncExitStack
from pathlib import Path

import torch
import trio
from rich.console import Console
from rich.table import Table

from hydra.coordinator.audit import requests_until_flagged
from hydra.coordinator.generation import Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.config import DiscoveryConfig
from hydra.dht.service import open_dht_peer
from hydra.generate import wait_for_route
from hydra.models.catalog import load_catalog
from hydra.node import start_stage
from hydra.runtime.shard import ClientHead, StageBlocks, load_head, load_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.stage.limits import StageLimits
from hydra.verification.compare import LOOSE, STRICT, compare, massive_channels
from hydra.verification.compare import calibrate as calibrate_bounds
from hydra.verification.config import VerificationConfig

CPU = torch.device("cpu")
PROMPT = 24
RATES = (0.05, 0.1, 0.2)


def span_outputs(
    blocks: StageBlocks, inputs: list[torch.Tensor], skip_first: bool = False
) -> list[torch.Tensor]:
    layers = blocks.model.layers
    if skip_first:
        blocks.model.layers = layers[1:]
    try:
        cache, position, outputs = blocks.new_cache(), 0, []
        for hidden in inputs:
            outputs.append(blocks.forward(hidden, cache, position))
            position += hidden.shape[1]
        return outputs
    finally:
        blocks.model.layers = layers


def cheats(blocks: StageBlocks, inputs: list[torch.Tensor], honest: list[torch.Tensor]) -> dict[str, list]:
    generator = torch.Generator().manual_seed(1)

    def noise(scale: float) -> list[torch.Tensor]:
        return [
            h + scale * h.pow(2).mean(-1, keepdim=True).sqrt() * torch.randn(h.shape, generator=generator)
            for h in honest
        ]

    return {
        "noise 1e-6": noise(1e-6),
        "noise 1e-5": noise(1e-5),
        "noise 1e-4": noise(1e-4),
        "noise 1e-3": noise(1e-3),
        "noise 1e-2": noise(1e-2),
        "skipped block": span_outputs(blocks, inputs, skip_first=True),
        "stale output": [honest[0], *(h[:, -1:] for h in honest[:-1])],
    }


def detection(checkpoint: Path, trials: int, decode: int) -> None:
    inputs = token_inputs(load_head(checkpoint, torch.float32, CPU), decode, seed=0)
    blocks = load_stage(checkpoint, 0, 15, torch.float32, CPU)
    honest = span_outputs(blocks, inputs)
    massive = load_catalog().resolve("smollm2").massive_channels
    table = Table(title=f"requests until flagged (blocks 0:15, fp32 verifier, {trials} trials, cap 500)")
    table.add_column("cheat")
    for rate in RATES:
        table.add_column(f"rate {rate}: median / p99")
    for name, cheat in cheats(blocks, inputs, honest).items():
        verdicts = [compare(c, h, STRICT, massive).passed for c, h in zip(cheat, honest, strict=True)]
        row = [name]
        for rate in RATES:
            counts = sorted(
                n
                if (
                    n := requests_until_flagged(
                        verdicts.__getitem__, len(verdicts), VerificationConfig(rate, seed=seed), 9, 500
                    )
                )
                else 501
                for seed in range(trials)
            )
            p99 = counts[min(len(counts) - 1, int(0.99 * len(counts)))]
            row.append(f"{statistics.median(counts):.0f} / {p99 if p99 <= 500 else 'never'}")
        table.add_row(*row)
    Console(width=200).print(table)


async def throughput(checkpoint: Path, tokens: int, runs: int) -> None:
    spec = load_catalog().resolve("smollm2")
    spans = [(0, 10), (10, 20), (20, 30)]
    async with AsyncExitStack() as stack:
        bootstrap: tuple[str, ...] = ()
        for span in spans:
            peer = await stack.enter_async_context(
                open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig(bootstrap=bootstrap))
            )
            _, announcer, _ = await start_stage(
                peer, spec, checkpoint, span, torch.float32, CPU, StageLimits()
            )
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            await nursery.start(announcer.run)
            bootstrap = bootstrap or (peer.multiaddrs()[0],)
        client = await stack.enter_async_context(
            open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig(bootstrap=bootstrap))
        )
        rates: dict[str, list[float]] = {"off": [], "0.1": []}
        commitments: list[float] = []  # per token processed (prompt and generated)
        per_generated: list[float] = []  # all commitment bytes over the generated tokens alone
        coordinators = {}
        for name, rate in (("off", 0.0), ("0.1", 0.1)):  # one client host, two coordinators
            coordinators[name] = coordinator = Coordinator(
                client.host,
                client.dht,
                load_catalog(),
                checkpoints={spec.id: checkpoint},
                verification=VerificationConfig(verify_rate=rate, seed=3),
            )
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            await nursery.start(coordinator.auditor.run)
            await wait_for_route(coordinator, spec.id, 30)
        request = GenerationRequest(
            spec.id,
            prompt="The history of the printing press",
            params=SamplingParams(max_tokens=tokens, temperature=0.0),
        )
        for coordinator in coordinators.values():
            await coordinator.generate(request)  # warm-up
        for _ in range(runs):  # alternating, so drift on a shared machine hits both alike
            for name, coordinator in coordinators.items():
                done = await coordinator.generate(request)
                rates[name].append(done.decode_tokens_per_s)
                seen = done.prompt_tokens + done.completion_tokens
                commitments.append(done.commitment_bytes / seen / len(done.route))
                per_generated.append(done.commitment_bytes / done.completion_tokens / len(done.route))
                with trio.fail_after(120):
                    await coordinator.auditor.idle.wait()
        print(f"audits at rate 0.1: {coordinators['0.1'].status()['verification']['audits']}")
        off, on = statistics.median(rates["off"]), statistics.median(rates["0.1"])
        table = Table(title=f"3-peer pipeline, {tokens} tokens, median of {runs}")
        for column in ("verification", "decode tokens/s", "vs off"):
            table.add_column(column)
        table.add_row("off", f"{off:.2f}", "1.00")
        table.add_row("rate 0.1", f"{on:.2f}", f"{on / off:.2f}")
        Console(width=200).print(table)
        print(
            f"commitment bytes per token per stage: {statistics.median(commitments):.1f} "
            f"({statistics.median(per_generated):.1f} per generated token)"
        )


def token_inputs(head: ClientHead, decode: int, seed: int) -> list[torch.Tensor]:
    """A prompt of ``PROMPT`` random tokens, then ``decode`` single tokens, embedded."""
    ids = torch.randint(0, 5000, (PROMPT + decode,), generator=torch.Generator().manual_seed(seed)).tolist()
    embedded = head.embed(ids)
    return [embedded[:, :PROMPT], *(embedded[:, i : i + 1] for i in range(PROMPT, PROMPT + decode))]


def calibrate(checkpoint: Path) -> None:
    """Massive channels after every 5 blocks, and fp32-vs-bf16 bounds over two half-model spans
    (the last through the head), on calibration tokens the tests do not use."""
    head = load_head(checkpoint, torch.float32, CPU)
    hidden, found = token_inputs(head, 0, seed=1)[0], set()
    for start in range(0, 30, 5):
        blocks = load_stage(checkpoint, start, start + 5, torch.float32, CPU)
        hidden = blocks.forward(hidden, blocks.new_cache(), 0)
        found.update(massive_channels(hidden))
    massive = sorted(found)
    inputs, verdicts = token_inputs(head, 40, seed=1), []
    for start, end in ((0, 15), (15, 30)):
        reference = span_outputs(load_stage(checkpoint, start, end, torch.float32, CPU), inputs)
        replica = span_outputs(load_stage(checkpoint, start, end, torch.bfloat16, CPU), inputs)
        logits = head.all_logits if end == 30 else None
        verdicts += [
            compare(r.float(), f, LOOSE, massive, logits) for r, f in zip(replica, reference, strict=True)
        ]
        inputs = reference
    bounds = calibrate_bounds(verdicts)
    print(json.dumps({"massive_channels": massive, "mixed_precision": dataclasses.asdict(bounds)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--decode", type=int, default=40, help="decode steps in the detection runs")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    checkpoint = resolve_checkpoint(load_catalog().resolve("smollm2"))
    if args.calibrate:
        calibrate(checkpoint)
        return
    detection(checkpoint, args.trials, args.decode)
    trio.run(throughput, checkpoint, args.tokens, args.runs)


if __name__ == "__main__":
    main()
