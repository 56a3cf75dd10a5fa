"""Compiled decode steps.

A one-token step through a small model is mostly per-operation overhead: 30 SmolLM2 blocks
are ~1,000 eager operations, each a dispatch and a parallel region. ``torch.compile`` fuses
them into a few dozen C++ kernels (measured on this repo's 2-core CI machine, int4 weights:
20.5 ms a step eager, 11.5 compiled; float32 35 and 26). Shapes are compiled dynamic, so one
graph serves every session and cache length: the transformers ``DynamicCache`` stays (a
``StaticCache`` was measured no faster here, and would fix each session's length up front).

Prefill stays eager: it is compute-bound, where compiling gains little and every new prompt
length would cost a recompile. Compiling costs 20-45 s per span the first time (inductor keeps
its kernels on disk, so a restart pays less), so nodes warm up once at start and one-shot
commands do not compile by default.
"""

import shutil
from collections.abc import Callable
from typing import TypeVar

import torch

from hydra.errors import ConfigError

COMPILE_MODES = ("auto", "on", "off")
MIN_POSITION = 2  # below, a cache is empty or one long: sizes that compile a graph of their own
RECOMPILE_LIMIT = 64  # compiled graphs per function; each stage in a process is one (tests run many)

F = TypeVar("F", bound=Callable[..., torch.Tensor])


def compiler_found() -> bool:
    """Inductor builds its CPU kernels with the system's C++ compiler."""
    return shutil.which("g++") is not None or shutil.which("c++") is not None


def should_compile(mode: str, device: torch.device) -> bool:
    """``auto`` compiles on a CPU with a C++ compiler; on CUDA it needs CUDA graphs, which
    dynamic cache lengths defeat, so it stays eager until that is measured."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"--compile must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
    if mode == "on" and device.type == "cpu" and not compiler_found():
        raise ConfigError("--compile on needs a C++ compiler (g++) on the CPU; install one or use off")
    return mode == "on" or (mode == "auto" and device.type == "cpu" and compiler_found())


def compiled(fn: F) -> F:
    """``fn`` compiled once for every shape it will see."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(fn, dynamic=True)  # type: ignore[return-value]
