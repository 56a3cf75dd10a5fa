"""KV cache compaction by Attention Matching on SmolLM2-135M, against the full cache.

Contexts of 512 to 2,000 tokens of real text (``scripts/data/coriolanus.txt``: the opening of
Shakespeare's Coriolanus, public domain, as in karpathy/char-rnn's tinyshakespeare). The model
first continues each context greedily for 64 tokens with its full cache. Then, for each ratio
and method, the prefilled context's cache is compacted and the same 64 tokens are fed after it
(teacher forcing): the KL divergence of each next-token distribution from the full cache's,
and how often its greedy choice is the full cache's.

Methods: **Attention Matching** (phases 1+2: keys chosen by their attention, per-key biases and
values fitted), **selection only** (the same keys, no biases, values as they were: phase 1),
and **truncation** to the most recent tokens. Reference queries are the context's own, sampled
as a stage samples them (``hydra.compaction.cache``). Also printed: memory per session (the
cache's keys, values and biases, and the fixed-size query sample) and compaction time.

    .venv/bin/python scripts/bench_compaction.py [--lengths 512 1024 2000] [--ratios 2 4 8] [--tokens 64]
"""

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer
from transformers.cache_utils import Cache

from hydra.compaction.cache import CompactingLayer, query_sample_bytes
from hydra.models.catalog import load_catalog
from hydra.runtime.shard import ClientHead, StageBlocks, load_head, load_stage
from hydra.runtime.sources import resolve_checkpoint

TEXT = Path(__file__).parent / "data" / "coriolanus.txt"
METHODS = ("Attention Matching", "selection only", "truncation")
CPU = torch.device("cpu")


@dataclass
class Outcome:
    kl: float  # mean KL(full || compacted) of the next-token distributions, nats
    agreement: float  # share of positions whose greedy token is the full cache's
    cache_bytes: int
    seconds: float  # to compact the whole model's cache


def cache_bytes(cache: Cache) -> int:
    layers = [layer for layer in cache.layers if isinstance(layer, CompactingLayer)]
    tensors = [t for layer in layers for t in (layer.keys, layer.values, layer.bias) if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def truncate(cache: Cache, budget: int) -> None:
    """Keep the most recent ``budget`` entries of every attention block."""
    for layer in cache.layers:
        if isinstance(layer, CompactingLayer):
            layer.keys, layer.values = layer.keys[..., -budget:, :], layer.values[..., -budget:, :]


def continuation(
    blocks: StageBlocks, head: ClientHead, cache: Cache, first: int, start: int, tokens: int
) -> list[int]:
    """``tokens`` greedy tokens after ``first`` (already chosen), decoding on a copy of ``cache``."""
    cache, ids = copy.deepcopy(cache), [first]
    for position in range(start, start + tokens - 1):
        hidden = blocks.forward(head.embed(ids[-1:]), cache, position)
        ids.append(int(head.next_logits(hidden).argmax()))
    return ids


def logits_after(
    blocks: StageBlocks, head: ClientHead, cache: Cache, ids: list[int], start: int
) -> torch.Tensor:
    return head.all_logits(blocks.forward(head.embed(ids), cache, start))


def compare(reference: torch.Tensor, logits: torch.Tensor) -> tuple[float, float]:
    full, mine = torch.log_softmax(reference, -1), torch.log_softmax(logits, -1)
    kl = float((full.exp() * (full - mine)).sum(-1).mean())
    agreement = float((reference.argmax(-1) == logits.argmax(-1)).float().mean())
    return kl, agreement


def measure(
    blocks: StageBlocks, head: ClientHead, context: list[int], ratios: list[int], tokens: int
) -> tuple[int, dict[tuple[int, str], Outcome]]:
    prefilled = blocks.new_cache(compacting=True)
    with torch.inference_mode():
        first = int(head.next_logits(blocks.forward(head.embed(context), prefilled, 0)).argmax())
        fed = continuation(blocks, head, prefilled, first, len(context), tokens)
        reference = logits_after(blocks, head, copy.deepcopy(prefilled), fed, len(context))
    outcomes = {}
    for ratio in ratios:
        budget = max(1, len(context) // ratio)
        for method in METHODS:
            cache = copy.deepcopy(prefilled)
            started = time.perf_counter()
            if method == "truncation":
                truncate(cache, budget)
            else:
                blocks.compact(cache, budget, refit=method == "Attention Matching")
            seconds, size = time.perf_counter() - started, cache_bytes(cache)
            with torch.inference_mode():
                kl, agreement = compare(reference, logits_after(blocks, head, cache, fed, len(context)))
            outcomes[ratio, method] = Outcome(kl, agreement, size, seconds)
    return cache_bytes(prefilled), outcomes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2000], help="context tokens")
    parser.add_argument("--ratios", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--tokens", type=int, default=64, help="continuation tokens compared")
    args = parser.parse_args()
    path = resolve_checkpoint(load_catalog().resolve("smollm2"))
    blocks = load_stage(path, 0, 30, torch.float32, CPU)
    head = load_head(path, torch.float32, CPU)
    text = AutoTokenizer.from_pretrained(path)(TEXT.read_text())["input_ids"]
    console = Console()
    title = f"SmolLM2-135M float32: the next {args.tokens} tokens after a compacted context vs the full cache"
    table = Table(title=title)
    for column in ("context", "ratio", "method", "KL (nats)", "greedy agreement", "cache MB", "compaction s"):
        table.add_column(column, justify="right" if column not in ("method",) else "left")
    wins, contests = 0, 0
    seconds: dict[int, float] = {}  # per ratio, Attention Matching on the longest context
    for length in args.lengths:
        full_bytes, outcomes = measure(blocks, head, text[:length], args.ratios, args.tokens)
        table.add_row(str(length), "1x", "full cache", "0", "100%", f"{full_bytes / 2**20:.1f}", "")
        for ratio in args.ratios:
            for method in METHODS:
                o = outcomes[ratio, method]
                table.add_row(str(length), f"{ratio}x", method, f"{o.kl:.3f}", f"{o.agreement:.0%}",
                              f"{o.cache_bytes / 2**20:.1f}", f"{o.seconds:.2f}")
            am = outcomes[ratio, METHODS[0]].kl
            contests += 1
            wins += am < min(outcomes[ratio, m].kl for m in METHODS[1:])
            seconds[ratio] = outcomes[ratio, METHODS[0]].seconds
    console.print(table)
    verdict = "yes" if wins == contests else "NO"
    console.print(f"Attention Matching beats selection only and truncation (lower KL) in {wins} of "
                  f"{contests} (context, ratio) pairs: {verdict}")
    sample = query_sample_bytes(blocks.config, blocks.dtype) / 2**20
    console.print(f"reference queries a session keeps for compaction: at most {sample:.1f} MB over the "
                  "model's 30 blocks, whatever its length")
    stage = blocks.config.num_hidden_layers / 10  # a 10-block stage: a third of the model
    times = ", ".join(f"{ratio}x {s / stage:.2f} s" for ratio, s in seconds.items())
    console.print(f"compaction time per 10-block stage at {args.lengths[-1]} tokens: {times}")


if __name__ == "__main__":
    main()
