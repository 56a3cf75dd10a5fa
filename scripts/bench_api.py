#!/usr/bin/env python3
"""API benchmark: N concurrent streaming clients against one node, next to the coordinator's
direct Python API doing the same work in the same run.

  - direct   N concurrent ``Coordinator.stream`` calls in this process, the embedded SmolLM2
             served whole by a local stage (what a node does, without HTTP)
  - http     a ``hydra run`` node in its own process, N concurrent clients streaming
             ``/v1/chat/completions`` over HTTP (SSE), parsed as a client would

Each client asks for --tokens tokens (sampling at temperature 0.8 with distinct seeds, so
every stream generates its full length). Prints aggregate tokens/s, and TTFT p50 / p90 per
concurrency level; the HTTP/direct ratio is the price of the API layer.

Usage: scripts/bench_api.py [--clients 1 4 8] [--tokens 32]
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see scripts/bench_pipeline.py

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import aclosing

import httpx
import torch
import trio
from rich.console import Console
from rich.table import Table

from hydra.coordinator.generation import Completion, Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.config import DiscoveryConfig
from hydra.dht.service import open_dht_peer
from hydra.models.catalog import load_catalog
from hydra.runtime.shard import load_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.stage.limits import StageLimits
from hydra.stage.server import StageServer

QUESTION = "Write a few sentences about the ocean."


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def summary(ttfts: list[float], tokens: int, wall: float) -> tuple[float, float, float]:
    return tokens / wall, statistics.median(ttfts), p90(ttfts)


async def bench_direct(clients: int, tokens: int) -> tuple[float, float, float]:
    catalog = load_catalog()
    spec = catalog.resolve("smollm2")
    path = resolve_checkpoint(spec)
    blocks = load_stage(path, 0, spec.num_layers, torch.float32, torch.device("cpu"))
    async with open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig()) as peer:
        local = StageServer(None, spec.id, blocks, StageLimits(), peer.keypair)
        coordinator = Coordinator(peer.host, None, catalog, local=local, checkpoints={spec.id: path})

        async def one(seed: int, ttfts: list[float], counts: list[int]) -> None:
            request = GenerationRequest(
                spec.id, messages=({"role": "user", "content": QUESTION},),
                params=SamplingParams(max_tokens=tokens, temperature=0.8, seed=seed),
            )
            started = time.perf_counter()
            first = None
            async with aclosing(coordinator.stream(request)) as events:
                async for event in events:
                    if isinstance(event, Completion):
                        counts.append(event.completion_tokens)
                    elif first is None and event.text:
                        first = time.perf_counter() - started
            ttfts.append(first if first is not None else time.perf_counter() - started)

        await one(0, [], [])  # warm-up: loads the head
        ttfts: list[float] = []
        counts: list[int] = []
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for seed in range(clients):
                nursery.start_soon(one, seed + 1, ttfts, counts)
        return summary(ttfts, sum(counts), time.perf_counter() - started)


async def bench_http(url: str, clients: int, tokens: int) -> tuple[float, float, float]:
    async def one(client: httpx.AsyncClient, seed: int, ttfts: list[float], counts: list[int]) -> None:
        body = {"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": tokens, "temperature": 0.8, "seed": seed, "stream": True,
                "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        first = None
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    counts.append(chunk["usage"]["completion_tokens"])
        ttfts.append(first if first is not None else time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        await one(client, 0, [], [])  # warm-up
        ttfts: list[float] = []
        counts: list[int] = []
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for seed in range(clients):
                nursery.start_soon(one, client, seed + 1, ttfts, counts)
        return summary(ttfts, sum(counts), time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(home: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hydra.cli", "run", "--home", home, "--port", str(free_port()),
         "--api-port", str(port), "--rate-limit", "1000000",
         # the runtime of the in-process baseline, so the ratio is the API's cost alone
         "--quantization", "none", "--compile", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the node did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    table = Table(title=f"SmolLM2-135M fp32 CPU, streaming chat, {args.tokens} tokens per client")
    for column in ("clients", "direct tok/s", "http tok/s", "http/direct",
                   "direct TTFT p50/p90 ms", "http TTFT p50/p90 ms"):
        table.add_column(column, justify="right")
    results = {n: trio.run(bench_direct, n, args.tokens) for n in args.clients}
    with tempfile.TemporaryDirectory() as home:
        proc, url = start_node(home)
        try:
            for n in args.clients:
                d_rate, d50, d90 = results[n]
                h_rate, h50, h90 = trio.run(bench_http, url, n, args.tokens)
                table.add_row(str(n), f"{d_rate:.1f}", f"{h_rate:.1f}", f"{h_rate / d_rate:.2f}x",
                              f"{d50 * 1e3:.0f} / {d90 * 1e3:.0f}", f"{h50 * 1e3:.0f} / {h90 * 1e3:.0f}")
        finally:
            proc.terminate()
            proc.wait(10)
    Console().print(table)


if __name__ == "__main__":
    main()
