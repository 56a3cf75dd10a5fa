"""One thread for all torch work in this process, with all the cores.

Forward passes must run off the trio loop, but handing them to whichever worker thread is
free gives each thread its own OpenMP team; teams spin-wait after their work and steal the
cores the next computation needs (measured: ~7 ms per token on a 2-core machine with a
stage and a client head in one process). A single compute thread keeps one team, and
serialises forward passes, which on one device would contend anyway.

It must also be the only team. Once another thread has run a multi-threaded torch operation
(loading weights in a helper thread, sampling 49,152 logits on the event loop), OpenMP
manages more threads than there are cores and stops spinning between parallel regions, and
a decode step, a thousand small regions, pays a wake-up in each: 57 ms instead of 38 through
the 30 SmolLM2 blocks on 2 cores. (Thread counts cannot be set per thread: for threads
OpenMP did not start, libgomp keeps one global setting.) So weights load here, logits are
sampled here, and the event loop only touches small tensors; this thread gets every core."""

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import torch
import trio

T = TypeVar("T")


def compute_threads() -> int:
    """The cores this process may run on (a node normally owns its machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix="hydra-compute",
        initializer=lambda: torch.set_num_threads(compute_threads()),
    )


async def run_compute(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` on the compute thread; the trio loop keeps serving meanwhile. If the
    caller is cancelled the computation still finishes, and its result is dropped."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: Future) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    future = _executor().submit(fn, *args)
    future.add_done_callback(wake)
    await done.wait()
    return future.result()
