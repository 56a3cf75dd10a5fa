#!/usr/bin/env python3
"""Pipeline benchmark: the embedded SmolLM2 (fp32, CPU by default) in one process versus 1-,
2- and 3-peer pipelines over libp2p on loopback, in one run on one machine.

  - single    plain ``transformers`` ``generate`` (greedy) in this process: the baseline
  - N peers   N stage peers (real libp2p hosts, DHT, inference protocol on 127.0.0.1) serving
              equal spans, driven by a coordinator that found them through the DHT

For each: time to first token (prompt prefill + first token) and decode tokens/s (tokens
after the first over the time after the first), the median of ``--runs``; then the ratio
to the single-process rate and the overhead each network hop adds per token:
(pipeline ms/token - single ms/token) / hops, where a pipeline of N peers has N hops. The
pipelines return the output straight from the last stage (N+1 messages per token); the
largest is also measured with ``--relayed-return`` (2N), alternating run by run.

Then concurrent streams through the largest pipeline (``--streams``): N generations of
different prompts at once, their tokens over the wall time from the first request to the
last token (aggregate tokens/s), against the same prompts generated one after another; each
stream must get the tokens its prompt gets alone. Stages batch concurrent decode steps
(``hydra.runtime.batcher``); the table shows the mean batch on the stages and the head.

Then the stages' prefix cache (``--prefix-runs``): time to first token for a chat request with
a ~1,100-token document (``scripts/data/two_cities.txt`` five times over, a fresh variant each
run so the first request is cold), then the same request again (its prefix restored on every
stage), and the same document with another question.

Last, speculative decoding through the largest pipeline (``--draft-tokens``): decode tokens/s
with prompt-lookup drafts against without, on an input-grounded task (repeating a passage of
``scripts/data/two_cities.txt``) and on free writing, the tokens checked identical. The
other tables run without drafts, like the single-process baseline.

Each peer is its own process (its own interpreter and trio loop, as on its own machine);
all of them share this machine's cores with the coordinator, which runs the client head.

OpenMP threads are told to sleep when idle (OMP_WAIT_POLICY=PASSIVE, unless set): by default
an idle process's OpenMP team spins for a while after each forward pass and steals the cores
the next stage needs, a cost that only exists when several peers share one machine (measured
here: 3-peer 0.68x with spinning, 0.90x without).

Usage: scripts/bench_pipeline.py [--tokens 64] [--runs 3] [--peers 1 2 3] [--streams 8]
           [--draft-tokens 6]
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
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import trio
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from hydra.coordinator.generation import Completion, Coordinator, GenerationRequest
from hydra.coordinator.params import DRAFT_TOKENS, SamplingParams
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
TOPICS = ["the sea", "a mountain", "a city at night", "an old library", "the first snow", "a train",
          "a garden", "the desert"]


@dataclass(frozen=True)
class StreamsResult:
    streams: int
    aggregate: float  # tokens/s over the wall time
    mean_ttft: float
    stage_batch: float  # mean rows per forward pass, over the stages
    head_batch: float  # mean rows per pass through the client head
    token_ids: list[list[int]]


@dataclass(frozen=True)
class Decoding:
    ttft: float  # seconds, median
    rate: float  # decode tokens/s, median
    token_ids: list[int]
    hops: int


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


REPORT_EVERY = 0.2  # seconds between a peer process's reports of its batches


def peer_process(setup: Setup, layers: tuple[int, int], boot: tuple[str, ...], ready, counters) -> None:
    """A stage peer in its own process (own GIL and loop, as on its own machine); it keeps
    ``counters`` (batches, rows) up to date."""

    async def serve() -> None:
        spec = load_catalog().resolve("smollm2")
        discovery = DiscoveryConfig(bootstrap=boot, announce_interval=5.0, record_ttl=15.0)
        async with open_dht_peer(None, "127.0.0.1", 0, discovery) as peer:
            stage, announcer, _ = await start_stage(
                peer, spec, setup.checkpoint, layers, setup.dtype, setup.device, StageLimits()
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(announcer.run)
                ready.put(peer.multiaddrs()[0])
                while True:
                    counters[0], counters[1] = stage.batcher.stats.batches, stage.batcher.stats.rows
                    await trio.sleep(REPORT_EVERY)

    trio.run(serve)


@asynccontextmanager
async def pipeline_swarm(setup: Setup, peers: int) -> AsyncIterator[tuple[Coordinator, list]]:
    """``peers`` stage processes serving equal spans, and a coordinator here that found them;
    with each stage's (batches, rows) counters."""
    catalog = load_catalog()
    spec = catalog.resolve("smollm2")
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    processes, counters = [], [context.Array("q", 2, lock=False) for _ in range(peers)]
    try:
        boot: tuple[str, ...] = ()
        for index in range(peers):
            layers = shard_layers(index, peers, spec.num_layers)
            process = context.Process(
                target=peer_process, args=(setup, layers, boot, ready, counters[index]), daemon=True
            )
            process.start()
            processes.append(process)
            addr = await trio.to_thread.run_sync(ready.get, True, 120.0)
            boot = boot or (addr,)
        discovery = DiscoveryConfig(bootstrap=boot)
        async with open_dht_peer(None, "127.0.0.1", 0, discovery) as client:
            coordinator = Coordinator(
                client.host, client.dht, catalog, dtype=setup.dtype, device=setup.device,
                checkpoints={spec.id: setup.checkpoint}, draft_tokens=0,
            )
            await wait_for_route(coordinator, spec.id, 30.0)
            await coordinator.generate(generation(8))  # warm-up: loads the head, dials peers
            yield coordinator, counters
    finally:
        for process in processes:
            process.kill()
            process.join()


def generation(tokens: int) -> GenerationRequest:
    return GenerationRequest("smollm2", prompt=PROMPT, params=SamplingParams(max_tokens=tokens))


def chat(i: int, tokens: int) -> GenerationRequest:
    """The ``i``-th stream's request: a chat turn (prompts of different lengths)."""
    ask = f"Write a long poem about {TOPICS[i % len(TOPICS)]}." + " Take your time." * (i // len(TOPICS))
    return GenerationRequest(
        "smollm2", messages=({"role": "user", "content": ask},), params=SamplingParams(max_tokens=tokens)
    )


async def measure_streams(
    coordinator: Coordinator, counters: list, streams: int, tokens: int, one_by_one: bool
) -> StreamsResult:
    """``streams`` generations at once (or, ``one_by_one``, one after another)."""
    before = await stage_batches(counters)
    decisions = (coordinator.decisions.stats.batches, coordinator.decisions.stats.rows)
    done: dict[int, Completion] = {}

    async def generate(i: int) -> None:
        done[i] = await coordinator.generate(chat(i, tokens))

    started = time.perf_counter()
    if one_by_one:
        for i in range(streams):
            await generate(i)
    else:
        async with trio.open_nursery() as nursery:
            for i in range(streams):
                nursery.start_soon(generate, i)
    wall = time.perf_counter() - started
    after = await stage_batches(counters)
    batches, rows = (sum(a[k] - b[k] for a, b in zip(after, before, strict=True)) for k in (0, 1))
    head = coordinator.decisions.stats
    return StreamsResult(
        streams,
        sum(c.completion_tokens for c in done.values()) / wall,
        statistics.mean(c.ttft_s for c in done.values()),
        rows / max(1, batches),
        (head.rows - decisions[1]) / max(1, head.batches - decisions[0]),
        [done[i].token_ids for i in range(streams)],
    )


async def stage_batches(counters: list) -> list[tuple[int, int]]:
    """(batches, rows) each stage has run so far, as its process last reported them."""
    await trio.sleep(2 * REPORT_EVERY)
    return [(c[0], c[1]) for c in counters]


async def measure(
    coordinator: Coordinator, tokens: int, runs: int, returns: tuple[bool, ...] = (False,)
) -> dict[bool, Decoding]:
    """Per way back (relayed return or not; alternating run by run, so each sees the same
    machine): median TTFT and decode tokens/s over ``runs``, the last tokens, the route's length."""
    done: dict[bool, list[Completion]] = {relayed: [] for relayed in returns}
    for _ in range(runs):
        for relayed in returns:
            coordinator.privacy = replace(coordinator.privacy, relayed_return=relayed)
            done[relayed].append(await coordinator.generate(generation(tokens)))
    coordinator.privacy = replace(coordinator.privacy, relayed_return=False)
    return {
        relayed: Decoding(
            statistics.median(c.ttft_s for c in runs_),
            statistics.median(c.decode_tokens_per_s for c in runs_),
            runs_[-1].token_ids,
            len(runs_[-1].route),
        )
        for relayed, runs_ in done.items()
    }


@dataclass(frozen=True)
class PrefixReuse:
    cold: float  # TTFT, seconds
    again: float  # the same request again
    other: float  # the same document, another question
    same: bool  # the repeated request's tokens equal the cold one's


def document(run: int) -> str:
    text = (Path(__file__).parent / "data" / "two_cities.txt").read_text().strip()
    return "\n\n".join(f"[Part {run}.{i}] {text}" for i in range(1, 6))


async def measure_prefix_reuse(coordinator: Coordinator, runs: int) -> PrefixReuse:
    def chat(run: int, question: str) -> GenerationRequest:
        content = f"{document(run)}\n\nQuestion: {question}"
        return GenerationRequest(
            "smollm2", messages=({"role": "user", "content": content},), params=SamplingParams(max_tokens=8)
        )

    cold, again, other, same = [], [], [], True
    for run in range(runs):
        first = await coordinator.generate(chat(run, "What is this text about?"))
        repeated = await coordinator.generate(chat(run, "What is this text about?"))
        followup = await coordinator.generate(chat(run, "Who wrote it?"))
        cold.append(first.ttft_s)
        again.append(repeated.ttft_s)
        other.append(followup.ttft_s)
        same = same and repeated.token_ids == first.token_ids
    return PrefixReuse(statistics.median(cold), statistics.median(again), statistics.median(other), same)


@dataclass(frozen=True)
class Speculation:
    task: str
    plain: float  # decode tokens/s without drafts
    drafted: float  # ... with them
    acceptance: float  # accepted drafts / drafted
    same: bool


def tasks(tokens: int) -> dict[str, GenerationRequest]:
    passage = " ".join((Path(__file__).parent / "data" / "two_cities.txt").read_text().split()[:120])
    asks = {
        "repeat a passage": f"Repeat this passage word for word:\n\n{passage}",
        "free writing": "Write a long story about a lighthouse keeper.",
    }
    return {
        task: GenerationRequest(
            "smollm2", messages=({"role": "user", "content": ask},), params=SamplingParams(max_tokens=tokens)
        )
        for task, ask in asks.items()
    }


async def measure_speculation(
    coordinator: Coordinator, draft_tokens: int, tokens: int, runs: int
) -> list[Speculation]:
    results = []
    for task, request in tasks(tokens).items():
        rates: dict[int, list[float]] = {0: [], draft_tokens: []}
        for _ in range(runs):
            for k in rates:  # alternating, so both see the same machine
                coordinator.draft_tokens = k
                done = await coordinator.generate(request)
                rates[k].append(done.decode_tokens_per_s)
                if k:
                    drafted, ids = done, done.token_ids
                else:
                    plain_ids = done.token_ids
        results.append(Speculation(
            task, statistics.median(rates[0]), statistics.median(rates[draft_tokens]),
            drafted.accepted / max(1, drafted.drafted), ids == plain_ids,
        ))
    coordinator.draft_tokens = 0
    return results


@dataclass
class Extras:
    """What the largest pipeline measures beyond plain decoding."""

    relayed: Decoding | None  # decoding with the output relayed back through every stage
    concurrent: list[tuple[StreamsResult, StreamsResult]]
    prefix: PrefixReuse | None
    speculation: list[Speculation]


async def bench_pipeline(
    setup: Setup, peers: int, tokens: int, runs: int, largest: bool, streams: list[int], prefix_runs: int,
    draft_tokens: int,
) -> tuple[Decoding, Extras]:
    """One generation at a time (median of ``runs``; for the ``largest`` pipeline also with
    the output relayed back); then, for each count in ``streams``, that many at once (1: the
    same prompts one after another); then ``prefix_runs`` of prefix reuse; then, with
    ``draft_tokens``, speculative decoding against plain."""
    async with pipeline_swarm(setup, peers) as (coordinator, counters):
        decoded = await measure(coordinator, tokens, runs, (False, True) if largest else (False,))
        concurrent = [
            (await measure_streams(coordinator, counters, n, tokens, one_by_one=True),
             await measure_streams(coordinator, counters, n, tokens, one_by_one=False))
            for n in streams
        ]
        prefix = await measure_prefix_reuse(coordinator, prefix_runs) if prefix_runs else None
        speculation = []
        if draft_tokens:
            speculation = await measure_speculation(coordinator, draft_tokens, tokens, runs)
    assert decoded[False].hops == peers, f"expected {peers} hops, the route had {decoded[False].hops}"
    return decoded[False], Extras(decoded.get(True), concurrent, prefix, speculation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--streams", type=int, nargs="*", default=[8],
                        help="concurrent streams through the largest pipeline (none: skip)")
    parser.add_argument("--prefix-runs", type=int, default=3,
                        help="prefix-cache runs through the largest pipeline (0: skip)")
    parser.add_argument("--draft-tokens", type=int, default=DRAFT_TOKENS,
                        help="speculative decoding through the largest pipeline (0: skip)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--dtype", default="float32", choices=sorted(WIRE_DTYPES))
    parser.add_argument("--checkpoint", type=Path, help="default: the embedded SmolLM2")
    args = parser.parse_args()
    checkpoint = args.checkpoint or resolve_checkpoint(load_catalog().resolve("smollm2"))
    setup = Setup(checkpoint, torch.device(args.device), WIRE_DTYPES[args.dtype])

    console = Console()
    single_ttft, single_rate, single_ids = bench_single(setup, args.tokens, args.runs)
    wire = load_catalog().resolve("smollm2").wire_dtype  # the coordinator's default, ``auto``
    title = (f"SmolLM2-135M {args.dtype} {args.device} ({wire} between stages), {args.tokens} new tokens, "
             f"median of {args.runs}")
    table = Table(title=title)
    for column in ("setup", "TTFT ms", "decode tok/s", "vs single", "per-hop ms", "same tokens"):
        table.add_column(column, justify="right")
    table.add_row("single process", f"{single_ttft * 1e3:.1f}", f"{single_rate:.1f}", "1.00x", "-", "-")
    largest = max(args.peers)
    extras = Extras(None, [], None, [])

    def row(name: str, peers: int, decoded: Decoding) -> None:
        per_hop = (1 / decoded.rate - 1 / single_rate) / peers
        ids = decoded.token_ids
        table.add_row(
            name, f"{decoded.ttft * 1e3:.1f}", f"{decoded.rate:.1f}", f"{decoded.rate / single_rate:.2f}x",
            f"{per_hop * 1e3:.2f}", "yes" if ids == single_ids[: len(ids)] else "NO",
        )

    for peers in args.peers:
        more = (args.streams, args.prefix_runs, args.draft_tokens) if peers == largest else ([], 0, 0)
        decoded, measured = trio.run(
            bench_pipeline, setup, peers, args.tokens, args.runs, peers == largest, *more
        )
        row(f"{peers}-peer pipeline", peers, decoded)
        if peers == largest:
            extras = measured
    if extras.relayed is not None:
        row(f"{largest}-peer, relayed return", largest, extras.relayed)
    console.print(table)
    if extras.concurrent:
        console.print(streams_table(extras.concurrent, largest, args.tokens))
    if extras.prefix is not None:
        console.print(prefix_table(extras.prefix, largest))
    if extras.speculation:
        console.print(speculation_table(extras.speculation, largest, args.draft_tokens))


def prefix_table(result: PrefixReuse, peers: int) -> Table:
    table = Table(title=f"{peers}-peer pipeline, time to first token with a ~1,100-token document")
    for column in ("request", "TTFT ms", "faster than cold", "same tokens"):
        table.add_column(column, justify="right")
    table.add_row("cold", f"{result.cold * 1e3:.0f}", "1.00x", "-")
    same = "yes" if result.same else "NO"
    table.add_row("the same again", f"{result.again * 1e3:.0f}", f"{result.cold / result.again:.1f}x", same)
    table.add_row("another question", f"{result.other * 1e3:.0f}", f"{result.cold / result.other:.1f}x", "-")
    return table


def speculation_table(results: list[Speculation], peers: int, draft_tokens: int) -> Table:
    table = Table(title=f"{peers}-peer pipeline, speculative decoding (up to {draft_tokens} drafts a step)")
    for column in ("task", "plain tok/s", "speculative tok/s", "speedup", "drafts accepted",
                   "same tokens"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.task, f"{r.plain:.1f}", f"{r.drafted:.1f}", f"{r.drafted / r.plain:.2f}x",
                      f"{r.acceptance:.0%}", "yes" if r.same else "NO")
    return table


def streams_table(results: list[tuple[StreamsResult, StreamsResult]], peers: int, tokens: int) -> Table:
    """Each concurrency level against its prompts generated one after another."""
    table = Table(title=f"{peers}-peer pipeline, concurrent streams of {tokens} tokens")
    for column in ("streams", "aggregate tok/s", "vs 1 stream", "mean TTFT ms", "stage batch",
                   "head batch", "same tokens as alone"):
        table.add_column(column, justify="right")
    for alone, result in results:
        table.add_row(
            f"1 at a time (x{result.streams})", f"{alone.aggregate:.1f}", "1.00x",
            f"{alone.mean_ttft * 1e3:.0f}", f"{alone.stage_batch:.2f}", f"{alone.head_batch:.2f}", "-",
        )
        table.add_row(
            f"{result.streams} at once", f"{result.aggregate:.1f}",
            f"{result.aggregate / alone.aggregate:.2f}x",
            f"{result.mean_ttft * 1e3:.0f}", f"{result.stage_batch:.2f}", f"{result.head_batch:.2f}",
            "yes" if result.token_ids == alone.token_ids else "NO",
        )
    return table


if __name__ == "__main__":
    main()
