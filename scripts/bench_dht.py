#!/usr/bin/env python3
"""DHT benchmark: lookup latency with N nodes on loopback, and join-to-discoverable time.

Real libp2p hosts (Noise, Yamux, TCP on 127.0.0.1) in one trio loop: one bootstrap node plus
N-1 peers that each announce a signed record for one model. Measures

  - rpc       one FIND_VALUE to one known node on a fresh stream: the floor any lookup pays
  - lookup    a full iterative lookup ``model/<id>`` from a random node (median, p90), and
              whether it returned every peer's record
  - join      from a new node starting its host to its record being found by another node

Usage: scripts/bench_dht.py [--nodes 8 32] [--lookups 50] [--joins 5]
"""

import argparse
import random
import statistics
import time
from contextlib import AsyncExitStack

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from rich.console import Console
from rich.table import Table

from hydra.dht.config import DiscoveryConfig
from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import SWARM_KEY, model_key
from hydra.dht.records import fresh, sign
from hydra.dht.routing import Contact
from hydra.p2p.host import build_host, running_host
from protocols import kad
from protocols.records import PeerRecord

MODEL = "bench-model"
NO_WORK = DiscoveryConfig(work_bits=0)  # the benchmark signs records without proof of work


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


async def start_peer(stack: AsyncExitStack, bootstrap: Dht | None) -> Dht:
    keypair = create_new_key_pair()
    host = build_host(keypair)
    await stack.enter_async_context(running_host(host, "127.0.0.1", 0))
    dht = Dht(host, NO_WORK)
    dht.keypair = keypair  # type: ignore[attr-defined]  (bench-only convenience)
    if bootstrap is not None:
        await dht.bootstrap(bootstrap.host.get_addrs())
    return dht


async def announce(dht: Dht) -> None:
    template = PeerRecord(
        peer_id=dht.peer_id, seq=0, issued_at=0.0, expires_at=0.0, addrs=dht.own_addrs(),
        version="bench", model=MODEL, layer_start=0, layer_end=30, total_layers=30,
        dtype="float32",
    )
    signed = sign(fresh(template, ttl=600), dht.keypair)  # type: ignore[attr-defined]
    await dht.put(model_key(MODEL), signed)
    await dht.put(SWARM_KEY, signed)


async def bench(nodes: int, lookups: int, joins: int, rng: random.Random) -> dict:
    async with AsyncExitStack() as stack:
        boot = await start_peer(stack, None)
        peers = [boot]
        for _ in range(nodes - 1):
            peers.append(await start_peer(stack, boot))
        for dht in peers[1:]:
            await announce(dht)
        for dht in peers:  # let late joiners' tables fill as in a settled swarm
            await dht.refresh()

        rpc = []
        for _ in range(lookups):
            a, b = rng.sample(peers, 2)
            started = time.perf_counter()
            await a.call(Contact(b.peer_id, b.own_addrs()), kad.FindValue(key=model_key(MODEL)))
            rpc.append((time.perf_counter() - started) * 1000)

        latencies, complete = [], 0
        for _ in range(lookups):
            dht = rng.choice(peers)
            started = time.perf_counter()
            found = await dht.get(model_key(MODEL))
            latencies.append((time.perf_counter() - started) * 1000)
            complete += len(found) == nodes - 1

        join_times = []
        for _ in range(joins):
            started = time.perf_counter()
            newcomer = await start_peer(stack, boot)
            await announce(newcomer)
            observer = rng.choice(peers)
            with trio.fail_after(30):
                while newcomer.peer_id not in {e.record.peer_id for e in await observer.get(
                        model_key(MODEL))}:
                    await trio.sleep(0.01)
            join_times.append((time.perf_counter() - started) * 1000)
            peers.append(newcomer)
        return {
            "nodes": nodes,
            "rpc": statistics.median(rpc),
            "median": statistics.median(latencies),
            "p90": p90(latencies),
            "complete": complete / lookups,
            "join": statistics.median(join_times),
        }


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    results = [await bench(n, args.lookups, args.joins, rng) for n in args.nodes]
    table = Table(title="DHT on loopback (one trio loop; ms)")
    for column in ("nodes", "1 RPC (baseline)", "lookup median", "lookup p90",
                   "median / RPC", "complete lookups", "join → discoverable"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(str(r["nodes"]), f"{r['rpc']:.1f}", f"{r['median']:.1f}", f"{r['p90']:.1f}",
                      f"{r['median'] / r['rpc']:.1f}x", f"{r['complete']:.0%}", f"{r['join']:.0f}")
    Console().print(table)
    worst = max(r["median"] for r in results if r["nodes"] == max(args.nodes))
    print(f"target: lookup median < 100 ms at {max(args.nodes)} nodes -> "
          f"{'met' if worst < 100 else 'MISSED'} ({worst:.1f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--lookups", type=int, default=50)
    parser.add_argument("--joins", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    trio.run(main, parser.parse_args())
