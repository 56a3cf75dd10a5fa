"""Continuous batching: work that arrives while the compute thread is busy runs together.

Concurrent sessions each submit their step and wait. Whoever holds the batcher takes the
oldest waiting job and, when it has a batch key, every later job with the same key (up to
``max_batch``), and runs them as one call on the compute thread; jobs that arrive meanwhile
form the next batch. A job's turn comes in arrival order, so a long prefill delays steps
behind it but no session starves; a job without a key (a prefill, a replay) runs alone.

Once sessions step in lockstep, a batch that is short of the last one's size waits up to
``window`` seconds for the rest (a session whose reply is still on its way back through the
pipeline): the missing rows would otherwise each cost a step of their own. A lone session
never waits.
"""

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from hydra.runtime.compute import run_compute

J = TypeVar("J")
R = TypeVar("R")


@dataclass(eq=False)
class _Job(Generic[J, R]):
    item: J
    key: Hashable | None
    taken: bool = False
    done: bool = False
    result: R | None = None
    error: Exception | None = None


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0

    @property
    def mean_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class Batcher(Generic[J, R]):
    """Runs ``run(items) -> results`` (one result per item, on the compute thread) over batches
    of submitted items."""

    def __init__(self, run: Callable[[list[J]], list[R]], max_batch: int, window: float = 0.0) -> None:
        if max_batch < 1 or not math.isfinite(window) or window < 0:
            raise ValueError("max_batch must be >= 1 and window a non-negative number of seconds")
        self._run = run
        self.max_batch = max_batch
        self.window = window
        self.stats = BatchStats()
        self._pending: list[_Job[J, R]] = []
        self._lock = trio.Lock()  # fair: holders take turns in arrival order
        self._arrived = trio.Event()
        self._last_rows = 1

    async def submit(self, item: J, key: Hashable | None = None) -> R:
        """``item``'s result; ``key``: items that may share a batch (None: runs alone)."""
        job: _Job[J, R] = _Job(item, key)
        self._pending.append(job)
        self._arrived.set()
        try:
            async with self._lock:
                while not job.done:
                    await self._run_next()
        finally:
            if not job.taken:  # cancelled while waiting: nobody will run it
                self._pending.remove(job)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def _run_next(self) -> None:
        if self._pending[0].key is not None and self.window:
            await self._gather(self._pending[0].key, min(self.max_batch, self._last_rows))
        if not self._pending:  # everyone waiting was cancelled meanwhile
            return
        batch = self._take(self._pending[0])
        with trio.CancelScope(shield=True):  # other sessions' rows are in it: finish it
            try:
                results = await run_compute(self._run, [job.item for job in batch])
            except Exception as exc:  # noqa: BLE001 - each caller gets the error its step raised
                for job in batch:
                    job.error, job.done = exc, True
                return
        for job, result in zip(batch, results, strict=True):
            job.result, job.done = result, True
        self._last_rows = len(batch)
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))

    async def _gather(self, key: Hashable, rows: int) -> None:
        """Wait up to ``window`` until ``rows`` jobs with ``key`` are waiting."""
        with trio.move_on_after(self.window):
            while sum(1 for job in self._pending if job.key == key) < rows:
                self._arrived = trio.Event()
                await self._arrived.wait()

    def _take(self, head: _Job[J, R]) -> list[_Job[J, R]]:
        if head.key is None:
            batch = [head]
        else:
            batch = [job for job in self._pending if job.key == head.key][: self.max_batch]
        for job in batch:
            job.taken = True
            self._pending.remove(job)
        return batch
