#!/usr/bin/env python3
"""Activation precision on the wire: what a pipeline's tokens become when hidden states cross
each hop as float16 or bfloat16 instead of float32 (half the bytes).

A pipeline of N stages rounds the activations N times: at every stage boundary and on the
way back to the coordinator. This computes exactly that in one process (SmolLM2 split into
``--stages`` equal spans, the output of each rounded to the wire dtype and back) and compares
greedy decoding with the float32 wire: tokens until the first difference for each prompt,
the next-token KL over the float32 run's positions, and bytes per token on the wire. A wire
dtype is a safe default for a model when its greedy tokens equal float32's on every prompt.
Last, what lz4 makes of those bytes (the prompts' activations at the first stage boundary,
as one step each): compressed size over raw, and the time to compress.

Usage: scripts/bench_wire.py [--tokens 64] [--stages 3] [--prompts N]
"""

import argparse
import time

import lz4.frame
import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from hydra.models.catalog import load_catalog
from hydra.runtime.shard import ClientHead, StageBlocks, load_head, load_stage, text_config
from hydra.runtime.sources import resolve_checkpoint
from hydra.runtime.wire import WIRE_DTYPES
from hydra.stage.placement import shard_layers

CPU = torch.device("cpu")
PROMPTS = (
    "The history of the printing press",
    "def fibonacci(n):",
    "Water boils at",
    "The capital of France is",
    "Once upon a time, in a small village,",
    "List three uses of copper:",
)


@torch.inference_mode()
def lz4_on(
    stage: StageBlocks, head: ClientHead, prompts: list[list[int]], wire: torch.dtype
) -> tuple[float, float]:
    """lz4's compressed/raw ratio and microseconds per KB on ``stage``'s outputs for the prompts."""
    raw = [stage.forward(head.embed(ids), stage.new_cache(), 0).to(wire).contiguous() for ids in prompts]
    data = [t.view(torch.uint8).numpy().tobytes() for t in raw]
    started = time.perf_counter()
    packed = [lz4.frame.compress(d) for d in data]
    elapsed = time.perf_counter() - started
    size = sum(map(len, data))
    return sum(map(len, packed)) / size, elapsed * 1e6 / (size / 1024)


@torch.inference_mode()
def greedy(
    stages: list[StageBlocks], head: ClientHead, ids: list[int], tokens: int, wire: torch.dtype
) -> tuple[list[int], torch.Tensor]:
    """Greedy ids and each step's log-probabilities, every stage's output rounded to ``wire``."""
    caches = [s.new_cache() for s in stages]
    out: list[int] = []
    logprobs = []
    step, position = ids, 0
    for _ in range(tokens):
        hidden = head.embed(step)
        for stage, cache in zip(stages, caches, strict=True):
            hidden = stage.forward(hidden.to(wire).float(), cache, position)
        row = head.next_logits(hidden.to(wire).float())
        logprobs.append(torch.log_softmax(row, -1))
        out.append(int(row.argmax()))
        position += len(step)
        step = out[-1:]
    return out, torch.stack(logprobs)


def agreement(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    args = parser.parse_args()
    path = resolve_checkpoint(load_catalog().resolve("smollm2"))
    layers = text_config(path).num_hidden_layers
    spans = [shard_layers(i, args.stages, layers) for i in range(args.stages)]
    stages = [load_stage(path, start, end, torch.float32, CPU) for start, end in spans]
    head = load_head(path, torch.float32, CPU)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS[: args.prompts]]
    reference = [greedy(stages, head, ids, args.tokens, torch.float32) for ids in prompts]

    table = Table(title=f"SmolLM2-135M, {args.stages} stages, {args.tokens} greedy tokens per prompt")
    for column in ("wire dtype", "bytes/token", "tokens equal to float32, per prompt", "all equal",
                   "max next-token KL", "lz4 size", "lz4 µs/KB"):
        table.add_column(column, justify="right")
    hidden = text_config(path).hidden_size
    for name, wire in WIRE_DTYPES.items():
        runs = [greedy(stages, head, ids, args.tokens, wire) for ids in prompts]
        agreed = [agreement(got, want) for (got, _), (want, _) in zip(runs, reference, strict=True)]
        kl = max(  # over the positions whose contexts are still the same
            float(torch.sum(want.exp() * (want - got), -1)[: agreement(g, w) + 1].max())
            for (g, got), (w, want) in zip(runs, reference, strict=True)
        )
        ratio, cost = lz4_on(stages[0], head, prompts, wire)
        table.add_row(
            name, str(hidden * wire.itemsize), " / ".join(map(str, agreed)),
            "yes" if all(a == args.tokens for a in agreed) else "no", f"{kl:.2g}",
            f"{ratio:.0%}", f"{cost:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
