#!/usr/bin/env python3
"""Runtime benchmark on the embedded SmolLM2 (CPU), everything measured in one run.

1. Speed: greedy decode tokens/s (``--tokens`` tokens) and the time of a 512-token prefill for
   plain transformers in float32 (the baseline), this runtime's blocks and head in a loop, and
   ``hydra generate`` (coordinator and stage in one process), in each of ``--modes`` (a
   quantization, ``+compiled`` for compiled decode steps); a ``hydra run`` node over HTTP with
   ``--http``; and llama.cpp on the very GGUF the package ships when ``llama-cpp-python`` is
   installed (``.venv/bin/pip install llama-cpp-python``: it builds from source, several
   minutes; where a VM reports AMX without enabling it, build with ``CMAKE_ARGS`` as the
   README says, or it crashes in its AMX kernels).
2. Quality per mode against float32: greedy agreement (tokens until the first difference,
   over three prompts) and perplexity of a public-domain passage the repo ships
   (``scripts/data/two_cities.txt``).
3. Memory per mode: resident set of a process holding all blocks and the head, above a bare
   torch + transformers import, and above the same runtime with its model classes built and no
   weights (transformers' model code alone is ~85 MB), against the bytes of the weights held.

Usage: scripts/bench_runtime.py [--tokens 64] [--modes none,int8,int4,int4+compiled] [--http]
"""

import argparse
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from rich.console import Console
from rich.table import Table

from hydra.models.catalog import load_catalog
from hydra.runtime.shard import ClientHead, StageBlocks, load_head, load_stage
from hydra.runtime.sources import package_dir, resolve_checkpoint

CPU = torch.device("cpu")
PROMPTS = ("The history of the printing press", "def fibonacci(n):", "Water boils at")
PASSAGE = Path(__file__).parent / "data" / "two_cities.txt"
PREFILL = 512


@torch.inference_mode()
def loop_generate(
    blocks: StageBlocks, head: ClientHead, ids: list[int], tokens: int
) -> tuple[list[int], float]:
    """Greedy ids and decode tokens/s through ``blocks`` and ``head``."""
    cache = blocks.new_cache()
    hidden = blocks.forward(head.embed(ids), cache, 0)
    out, position = [int(head.next_logits(hidden).argmax())], len(ids)
    started = time.perf_counter()
    for _ in range(tokens - 1):
        hidden = blocks.forward(head.embed(out[-1:]), cache, position)
        position += 1
        out.append(int(head.next_logits(hidden).argmax()))
    return out, (tokens - 1) / (time.perf_counter() - started)


@torch.inference_mode()
def prefill_s(blocks: StageBlocks, head: ClientHead, ids: list[int]) -> float:
    started = time.perf_counter()
    head.next_logits(blocks.forward(head.embed(ids), blocks.new_cache(), 0))
    return time.perf_counter() - started


@torch.inference_mode()
def perplexity(blocks: StageBlocks, head: ClientHead, ids: list[int]) -> float:
    hidden = blocks.forward(head.embed(ids), blocks.new_cache(), 0)
    logits = head.all_logits(hidden)[:-1]
    targets = torch.tensor(ids[1:])
    return math.exp(float(torch.nn.functional.cross_entropy(logits, targets)))


@torch.inference_mode()
def transformers_baseline(
    checkpoint: Path, ids: list[int], long: list[int], tokens: int
) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = torch.tensor([ids])
    model.generate(prompt, max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
    started = time.perf_counter()
    model.generate(prompt, max_new_tokens=1, do_sample=False, pad_token_id=0)
    first = time.perf_counter() - started
    started = time.perf_counter()
    model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    decode = (tokens - 1) / (time.perf_counter() - started - first)
    started = time.perf_counter()
    model(torch.tensor([long]))
    return decode, time.perf_counter() - started


def llama_cpp(ids: list[int], long: list[int], tokens: int) -> tuple[float, float] | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    spec = load_catalog().resolve("smollm2")
    assert spec.package is not None
    source = package_dir(spec.package)
    assert source is not None
    llm = Llama(str(source / spec.package.file), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
    llm.eval(ids)
    started = time.perf_counter()
    for _ in range(tokens - 1):
        token = llm.sample(top_k=1)
        llm.eval([token])
    decode = (tokens - 1) / (time.perf_counter() - started)
    llm.reset()
    started = time.perf_counter()
    llm.eval(long)
    return decode, time.perf_counter() - started


def runtime_args(mode: str) -> list[str]:
    """The ``hydra`` flags of a ``--modes`` entry such as ``int4+compiled``."""
    quantization, _, compiled = mode.partition("+")
    return ["--quantization", quantization, "--compile", "on" if compiled else "off"]


def hydra_generate(mode: str, prompt: str, tokens: int) -> tuple[float, float]:
    """Decode tokens/s of the ``hydra generate`` command in ``mode``, and its time to first token
    on ``prompt``: in processes of their own, as a user runs it (this one has done torch work
    on its main thread, which slows a compute thread: see ``hydra.runtime.compute``)."""

    def run(text: str, max_tokens: int) -> re.Match[str]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hydra.cli",
                "generate",
                "--max-tokens",
                str(max_tokens),
                *runtime_args(mode),
                text,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        stats = re.search(r"first token (\d+) ms, ([\d.]+) tokens/s", done.stderr)
        assert stats is not None, done.stderr[-2000:]
        return stats

    decode = float(run(PROMPTS[0], tokens)[2])
    return decode, int(run(prompt, 1)[1]) / 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_http(mode: str, prompt: str, tokens: int) -> tuple[float, float]:
    """A ``hydra run`` node in ``mode``: decode tokens/s of a streamed completion, and the time
    to the first token of ``prompt``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hydra.cli",
                "run",
                "--home",
                home,
                "--port",
                str(free_port()),
                "--api-port",
                str(port),
                *runtime_args(mode),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 600  # compiling takes a minute or two
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            stream(url, PROMPTS[0], 4)  # warm-up: the head loads
            times = stream(url, PROMPTS[0], tokens)
            first = stream(url, prompt, 1)
            return (len(times) - 1) / (times[-1] - times[0]), first[0]
        finally:
            proc.terminate()
            proc.wait(30)


def stream(url: str, prompt: str, tokens: int) -> list[float]:
    """Seconds after the request at which each streamed token arrived."""
    body = {"model": "smollm2", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    started, arrivals = time.perf_counter(), []
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0].get("text"):
                arrivals.append(time.perf_counter() - started)
    return arrivals


def memory(mode: str, checkpoint: Path) -> tuple[float, float, float]:
    """For a process holding every block and the head in ``mode``: MB of resident memory above
    a bare torch + transformers import, MB above the runtime with its model classes built but
    no weights (what the weights cost), and MB of weights held."""
    quantization, _, compiled = mode.partition("+")
    code = f"""
import gc, torch, transformers
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
bare = rss()
from pathlib import Path
from hydra.runtime.shard import load_stage, load_head, text_config, _meta_causal_lm
_meta_causal_lm(text_config(Path({str(checkpoint)!r})))  # the model classes, on the meta device
gc.collect()
runtime = rss()
blocks = load_stage(Path({str(checkpoint)!r}), 0, 30, torch.float32, torch.device('cpu'), {quantization!r},
                    {bool(compiled)!r})
head = load_head(Path({str(checkpoint)!r}), torch.float32, torch.device('cpu'), {quantization!r})
gc.collect()
seen, held = set(), 0
for module in (blocks.model, head.embed_tokens, head.norm, head.lm_head):
    for t in module.state_dict().values():
        if t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr()); held += t.untyped_storage().nbytes()
print(rss() - bare, rss() - runtime, held)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]) / 2**20, int(out[1]) / 2**20, int(out[2]) / 2**20


def measure_modes(
    checkpoint: Path,
    tokenizer,
    modes: list[str],
    tokens: int,
    http: bool,
    long: list[int],
    passage: list[int],
) -> tuple[list[tuple[str, str, float, float]], Table]:
    """Speed rows and the quality table for each mode (the first must be none)."""
    ids = tokenizer(PROMPTS[0])["input_ids"]
    long_prompt = tokenizer.decode(long)
    quality = Table(title=f"quality against float32 ({len(PROMPTS)} prompts x {tokens} greedy tokens)")
    for column in ("mode", "greedy tokens until the first difference", "perplexity (two_cities.txt)"):
        quality.add_column(column)
    rows, reference = [], {}
    for mode in modes:
        quantization, _, compiled = mode.partition("+")
        blocks = load_stage(checkpoint, 0, 30, torch.float32, CPU, quantization, bool(compiled))
        head = load_head(checkpoint, torch.float32, CPU, quantization)
        loop_generate(blocks, head, ids, 4)  # warm-up
        outputs = {p: loop_generate(blocks, head, tokenizer(p)["input_ids"], tokens) for p in PROMPTS}
        rows.append(("blocks + head in a loop", mode, outputs[PROMPTS[0]][1], prefill_s(blocks, head, long)))
        reference = reference or {p: out for p, (out, _) in outputs.items()}
        agreement = [
            next((i for i, (a, b) in enumerate(zip(reference[p], out, strict=True)) if a != b), len(out))
            for p, (out, _) in outputs.items()
        ]
        quality.add_row(mode, " / ".join(map(str, agreement)), f"{perplexity(blocks, head, passage):.3f}")
        del blocks, head
        decode, ttft = hydra_generate(mode, long_prompt, tokens)
        rows.append(("hydra generate", mode, decode, ttft))
        if http:
            rows.append(("hydra run node over HTTP", mode, *node_http(mode, long_prompt, tokens)))
    return rows, quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--modes", default="none,int8,int4,int4+compiled",
                        help="comma-separated quantizations, +compiled for compiled decode; none first")
    parser.add_argument("--http", action="store_true", help="also a hydra run node over HTTP per mode")
    args = parser.parse_args()
    modes = args.modes.split(",")
    checkpoint = resolve_checkpoint(load_catalog().resolve("smollm2"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    passage = tokenizer(PASSAGE.read_text())["input_ids"]
    long = (passage * (PREFILL // len(passage) + 1))[:PREFILL]
    console = Console(width=200)

    base_decode, base_prefill = transformers_baseline(checkpoint, ids, long, args.tokens)
    rows = [("transformers fp32", "none", base_decode, base_prefill)]
    cpp = llama_cpp(ids, long, args.tokens)
    if cpp is not None:
        rows.append(("llama.cpp (the shipped GGUF)", "Q4_1", *cpp))
    measured, quality = measure_modes(checkpoint, tokenizer, modes, args.tokens, args.http, long, passage)
    speed = Table(
        title=f"SmolLM2-135M on {os.cpu_count()} cores: decode {args.tokens} tokens, prefill {PREFILL}"
    )
    for column in (
        "runtime",
        "weights",
        "decode tok/s",
        "vs transformers fp32",
        "vs llama.cpp",
        "prefill s (TTFT for hydra)",
        "prefill vs transformers",
    ):
        speed.add_column(column)
    for name, mode, decode, prefill in rows + measured:
        versus_cpp = f"{decode / cpp[0]:.2f}x" if cpp else "-"
        speed.add_row(
            name,
            mode,
            f"{decode:.1f}",
            f"{decode / base_decode:.2f}x",
            versus_cpp,
            f"{prefill:.3f}",
            f"{base_prefill / prefill:.2f}x faster",
        )
    console.print(speed)
    console.print(quality)
    table = Table(title="memory of a process holding all 30 blocks and the head")
    for column in (
        "mode",
        "resident MB above torch + transformers",
        "above the runtime without weights",
        "weights held MB",
        "ratio (weights' cost / weights)",
    ):
        table.add_column(column)
    for mode in modes:
        bare, cost, held = memory(mode, checkpoint)
        table.add_row(mode, f"{bare:.0f}", f"{cost:.0f}", f"{held:.0f}", f"{cost / held:.2f}")
    console.print(table)
    if cpp is None:
        print("llama.cpp: not installed (.venv/bin/pip install llama-cpp-python to compare)")


if __name__ == "__main__":
    main()
