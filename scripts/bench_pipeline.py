#!/usr/bin/env python3
"""Pipeline benchmark: the embedded SmolLM2 (fp32, CPU by default) in one process versus 1-,
2- and 3-peer pipelines over libp2p on loopback, in one run on one machine.

  - single    plain ``transformers`` ``generate`` (greedy) in this process: the baseline
  - N peers   N stage peers (real libp2p hosts, DHT, inference protocol on 127.0.0.1) serving
              equal spans, driven by a coordinator that found them through the DHT

For each: time to first token (prompt prefill + first token) and decode tokens/s (tokens
after the first over the time after the first), the median of ``--runs``; then the ratio
to the single-process rate and the overhead each network hop adds per token:
(pipeline ms/token - single ms/token) / hops, where a pipeline of N peers has N hops.

Each peer is its own process (its own interpreter and trio loop, as on its own machine);
all of them share this machine's cores with the coordinator, which runs the client head.

OpenMP threads are told to sleep when idle (OMP_WAIT_POLICY=PASSIVE, unless set): by default
an idle process's OpenMP team spins for a while after each forward pass and steals the cores
the next stage needs, a cost that only exists when several peers share one machine (measured
here: 3-peer 0.68x with spinning, 0.90x without).

Usage: scripts/bench_pipeline.py [--tokens 64] [--runs 3] [--peers 1 2 3]
           [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--checkpoint DIR]

``--checkpoint`` takes any local checkpoint with SmolLM2-135M's architecture (30 blocks), e.g.
one with random weights on a machine without the embedded model: speed does not depend on
the weights' values.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import argparse
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import trio
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from hydra.coordinator.generation import Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.config import DiscoveryConfig
from hydra.dht.service import open_dht_peer
from hydra.generate import wait_for_route
from hydra.models.catalog import load_catalog
from hydra.node import start_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.runtime.wire import WIRE_DTYPES
from hydra.stage.limits import StageLimits
from hydra.stage.placement import shard_layers

PROMPT = "Count from one to one hundred in words: one, two, three, four,"


@dataclass(frozen=True)
class Setup:
    checkpoint: Path
    device: torch.device
    dtype: torch.dtype


def bench_single(setup: Setup, tokens: int, runs: int) -> tuple[float, float, list[int]]:
    model = AutoModelForCausalLM.from_pretrained(setup.checkpoint, dtype=setup.dtype)
    model = model.to(setup.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(setup.checkpoint)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"].to(setup.device)

    def timed(new: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        return time.perf_counter() - started, out[0, ids.shape[1] :].tolist()

    timed(tokens)  # warm-up
    ttfts, rates, generated = [], [], []
    for _ in range(runs):
        ttft, _ = timed(1)
        total, generated = timed(tokens)
        ttfts.append(ttft)
        rates.append((tokens - 1) / (total - ttft))
    return statistics.median(ttfts), statistics.median(rates), generated


def peer_process(setup: Setup, layers: tuple[int, int], boot: tuple[str, ...], ready) -> None:
    """A stage peer in its own process (own GIL and loop, as on its own machine)."""

    async def serve() -> None:
        spec = load_catalog().resolve("smollm2")
        discovery = DiscoveryConfig(bootstrap=boot, announce_interval=5.0, record_ttl=15.0)
        async with open_dht_peer(None, "127.0.0.1", 0, discovery) as peer:
            _, announcer, _ = await start_stage(
                peer, spec, setup.checkpoint, layers, setup.dtype, setup.device, StageLimits()
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(announcer.run)
                ready.put(peer.multiaddrs()[0])

    trio.run(serve)


@asynccontextmanager
async def pipeline_swarm(setup: Setup, peers: int) -> AsyncIterator[Coordinator]:
    """``peers`` stage processes serving equal spans, and a coordinator here that found them."""
    catalog = load_catalog()
    spec = catalog.resolve("smollm2")
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    processes = []
    try:
        boot: tuple[str, ...] = ()
        for index in range(peers):
            layers = shard_layers(index, peers, spec.num_layers)
            process = context.Process(
                target=peer_process, args=(setup, layers, boot, ready), daemon=True
            )
            process.start()
            processes.append(process)
            addr = await trio.to_thread.run_sync(ready.get, True, 120.0)
            boot = boot or (addr,)
        discovery = DiscoveryConfig(bootstrap=boot)
        async with open_dht_peer(None, "127.0.0.1", 0, discovery) as client:
            coordinator = Coordinator(
                client.host, client.dht, catalog, dtype=setup.dtype, device=setup.device,
                checkpoints={spec.id: setup.checkpoint},
            )
            await wait_for_route(coordinator, spec.id, 30.0)
            await coordinator.generate(generation(8))  # warm-up: loads the head, dials peers
            yield coordinator
    finally:
        for process in processes:
            process.kill()
            process.join()


def generation(tokens: int) -> GenerationRequest:
    return GenerationRequest("smollm2", prompt=PROMPT, params=SamplingParams(max_tokens=tokens))


async def measure(coordinator: Coordinator, tokens: int, runs: int) -> tuple[float, float, list[int], int]:
    """Median TTFT and decode tokens/s over ``runs``; the last tokens; the route's length."""
    ttfts, rates, generated, hops = [], [], [], 0
    for _ in range(runs):
        done = await coordinator.generate(generation(tokens))
        ttfts.append(done.ttft_s)
        rates.append(done.decode_tokens_per_s)
        generated, hops = done.token_ids, len(done.route)
    return statistics.median(ttfts), statistics.median(rates), generated, hops


async def bench_pipeline(
    setup: Setup, peers: int, tokens: int, runs: int
) -> tuple[float, float, list[int]]:
    async with pipeline_swarm(setup, peers) as coordinator:
        ttft, rate, generated, hops = await measure(coordinator, tokens, runs)
    assert hops == peers, f"expected {peers} hops, the route had {hops}"
    return ttft, rate, generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--dtype", default="float32", choices=sorted(WIRE_DTYPES))
    parser.add_argument("--checkpoint", type=Path, help="default: the embedded SmolLM2")
    args = parser.parse_args()
    checkpoint = args.checkpoint or resolve_checkpoint(load_catalog().resolve("smollm2"))
    setup = Setup(checkpoint, torch.device(args.device), WIRE_DTYPES[args.dtype])

    console = Console()
    single_ttft, single_rate, single_ids = bench_single(setup, args.tokens, args.runs)
    title = f"SmolLM2-135M {args.dtype} {args.device}, {args.tokens} new tokens, median of {args.runs}"
    table = Table(title=title)
    for column in ("setup", "TTFT ms", "decode tok/s", "vs single", "per-hop ms", "same tokens"):
        table.add_column(column, justify="right")
    table.add_row("single process", f"{single_ttft * 1e3:.1f}", f"{single_rate:.1f}", "1.00x", "-", "-")
    for peers in args.peers:
        ttft, rate, ids = trio.run(bench_pipeline, setup, peers, args.tokens, args.runs)
        per_hop = (1 / rate - 1 / single_rate) / peers
        table.add_row(
            f"{peers}-peer pipeline",
            f"{ttft * 1e3:.1f}",
            f"{rate:.1f}",
            f"{rate / single_rate:.2f}x",
            f"{per_hop * 1e3:.2f}",
            "yes" if ids == single_ids[: len(ids)] else "NO",
        )
    console.print(table)


if __name__ == "__main__":
    main()
