#!/usr/bin/env python3
"""MLX against PyTorch on the same stage: SmolLM2's blocks 0:30 in float32, loaded by each
backend (``hydra.runtime.backends``), measured in one run on this machine.

Decode tokens/s of one session, the time of a prefill, one batched step of ``--sessions``
sessions, and how far MLX's hidden states are from PyTorch's (the baseline). On Linux MLX
runs its CPU build; on Apple Silicon it runs on the GPU, where the ratio is what matters.

Usage: scripts/bench_backends.py [--tokens 32] [--prefill 256] [--sessions 8]
"""

import argparse
import os
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from hydra.models.catalog import load_catalog
from hydra.runtime.backends import MLX, PYTORCH, load_span
from hydra.runtime.sources import resolve_checkpoint

CPU = torch.device("cpu")


def seconds(run: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of ``repeats`` runs (the others paid for something else on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def measure(blocks, hidden: torch.Tensor, tokens: int, sessions: int) -> dict[str, object]:
    """The span's output for ``hidden``, decode tokens/s, and prefill and batched-step seconds."""
    prefill = seconds(lambda: blocks.forward(hidden, blocks.new_cache(), 0))
    cache = blocks.new_cache()
    output = blocks.forward(hidden, cache, 0)
    step = hidden[:, :1]
    decode = seconds(lambda: [blocks.forward(step, cache, hidden.shape[1] + i) for i in range(tokens)], 1)
    caches = [blocks.new_cache() for _ in range(sessions)]
    for c in caches:
        blocks.forward(hidden[:, :8], c, 0)

    def batched() -> None:
        blocks.forward_batch([step] * sessions, caches, [8] * sessions)
        for c in caches:
            blocks.rewind(c, 8, 9, 8, None)

    return {"output": output, "decode": tokens / decode, "prefill": prefill, "batch": seconds(batched)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32, help="decode steps timed")
    parser.add_argument("--prefill", type=int, default=256, help="prompt positions of the prefill timed")
    parser.add_argument("--sessions", type=int, default=8, help="sessions in the batched step")
    args = parser.parse_args()
    checkpoint = resolve_checkpoint(load_catalog().resolve("smollm2"))
    hidden = torch.randn(1, args.prefill, 576, generator=torch.Generator().manual_seed(0))
    results = {}
    for backend in (PYTORCH, MLX):
        blocks = load_span(backend, checkpoint, 0, 30, torch.float32, CPU)
        blocks.warm_up()
        results[backend] = measure(blocks, hidden, args.tokens, args.sessions)
    base, mlx = results[PYTORCH], results[MLX]
    gap = (mlx["output"] - base["output"]).abs().max() / base["output"].abs().max()
    table = Table(title=f"SmolLM2-135M blocks 0:30, float32, {os.cpu_count()} cores, torch threads "
                        f"{torch.get_num_threads()}")
    for column in ("backend", "decode tok/s", "vs pytorch", f"prefill {args.prefill} s",
                   f"batched step of {args.sessions} ms", "max |diff| / max |h|"):
        table.add_column(column)
    for backend, row in results.items():
        table.add_row(backend, f"{row['decode']:.1f}", f"{row['decode'] / base['decode']:.2f}x",
                      f"{row['prefill']:.3f}", f"{row['batch'] * 1000:.1f}",
                      "baseline" if backend == PYTORCH else f"{gap:.1e}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
