#!/usr/bin/env python3
"""Privacy benchmark: what onion routing and sealed activations cost.

  - seal       sealing and opening one activation message (SmolLM2: 1 token x 576 fp32,
               msgpack + AES-256-GCM + sequence nonce), median microseconds
  - pipeline   a 3-peer SmolLM2 pipeline (peers as processes, as in bench_pipeline.py),
               decode tokens/s and TTFT with protection on and off, alternating runs on the
               same peers so drift hits both equally; the greedy tokens must be identical

Target: protection costs at most 3% end to end.

Usage: scripts/bench_privacy.py [--tokens 64] [--runs 4] [--peers 3]
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_pipeline.py

import argparse
import secrets
import statistics
import time

import torch
import trio
from bench_pipeline import Setup, measure, pipeline_swarm
from rich.console import Console
from rich.table import Table

from hydra.models.catalog import load_catalog
from hydra.privacy.channel import ActivationChannel
from hydra.privacy.config import PrivacyConfig
from hydra.runtime.sources import resolve_checkpoint
from hydra.runtime.wire import to_wire


def seal_cost(hidden: int, rounds: int = 5000) -> tuple[float, float]:
    """Median µs to seal, and to open, one one-token activation message."""
    key, session = secrets.token_bytes(32), secrets.token_bytes(16)
    sender, receiver = ActivationChannel(key, session), ActivationChannel(key, session)
    tensor = to_wire(torch.randn(1, 1, hidden), "float32")
    seal_times, open_times = [], []
    for position in range(rounds):
        started = time.perf_counter()
        _, sealed = sender.wrap(tensor, position)
        sealed_at = time.perf_counter()
        receiver.unwrap(None, sealed, position)
        seal_times.append(sealed_at - started)
        open_times.append(time.perf_counter() - sealed_at)
    return statistics.median(seal_times) * 1e6, statistics.median(open_times) * 1e6


async def on_and_off(peers: int, tokens: int, runs: int) -> dict[bool, tuple[float, float, list[int]]]:
    checkpoint = resolve_checkpoint(load_catalog().resolve("smollm2"))
    setup = Setup(checkpoint, torch.device("cpu"), torch.float32)
    samples: dict[bool, list[tuple[float, float, list[int]]]] = {True: [], False: []}
    async with pipeline_swarm(setup, peers) as (coordinator, _):
        for _ in range(runs):
            for protect in (True, False):
                coordinator.privacy = PrivacyConfig(protect=protect)
                decoded = (await measure(coordinator, tokens, 1))[False]
                assert decoded.hops == peers
                samples[protect].append((decoded.ttft, decoded.rate, decoded.token_ids))
    return {
        protect: (
            statistics.median(s[0] for s in runs_),
            statistics.median(s[1] for s in runs_),
            runs_[-1][2],
        )
        for protect, runs_ in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--peers", type=int, default=3)
    args = parser.parse_args()
    seal_us, open_us = seal_cost(576)
    results = trio.run(on_and_off, args.peers, args.tokens, args.runs)
    (on_ttft, on_rate, on_ids), (off_ttft, off_rate, off_ids) = results[True], results[False]
    table = Table(title=f"SmolLM2-135M fp32 CPU, {args.peers}-peer pipeline, {args.tokens} tokens")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("seal one activation (1 x 576 fp32)", f"{seal_us:.1f} µs")
    table.add_row("open one activation", f"{open_us:.1f} µs")
    table.add_row("decode tok/s, protection off", f"{off_rate:.2f}")
    table.add_row("decode tok/s, protection on", f"{on_rate:.2f}")
    table.add_row("on / off", f"{on_rate / off_rate:.3f}x ({(1 - on_rate / off_rate) * 100:+.1f}% slower)")
    table.add_row("TTFT off / on", f"{off_ttft * 1e3:.0f} / {on_ttft * 1e3:.0f} ms")
    table.add_row("same greedy tokens", "yes" if on_ids == off_ids else "NO")
    Console().print(table)


if __name__ == "__main__":
    main()
