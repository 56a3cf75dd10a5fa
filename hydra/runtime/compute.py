"""One thread for all torch work in this process.

Forward passes must run off the trio loop, but handing them to whichever worker thread is
free gives each thread its own OpenMP team; teams spin-wait after their work and steal the
cores the next computation needs (measured: ~7 ms per token on a 2-core machine with a
stage and a client head in one process). A single compute thread keeps one team, and
serialises forward passes, which on one device would contend anyway."""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import trio

T = TypeVar("T")


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydra-compute")


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
