"""Continuous batching: work that arrives while the compute thread is busy runs together.

Concurrent sessions each submit their step and wait. Whoever holds the batcher takes the
oldest waiting job and, when it has a batch key, every later job with the same key (up to
``max_batch``), and runs them as one call on the compute thread; jobs that arrive meanwhile
form the next batch. A job's turn comes in arrival order, so a long prefill delays steps
behind it but no session starves; a job without a key (a prefill, a replay) runs alone.

Arrival order alone scatters sessions: a step that misses a batch by a millisecond costs a
whole forward pass of its own later, and its session stays out of step. So a batch waits for
the sessions (``member``s) due within ``window``: each member's steps come at a rhythm (its
round trip through the pipeline), so its next arrival is its last one plus its usual
interval. Members due later (another cohort of sessions, elsewhere in the pipeline: several
cohorts keep several stages busy at once) are not waited for, nor are members that left. The
default window is the time a batch takes to compute (a running average): worth waiting that
long for rows that would each otherwise cost about as much. A lone session never waits.
"""

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from hydra.runtime.compute import run_compute

HORIZON = 10.0  # seconds: a member silent for this long is forgotten (one that never left)
MAX_WINDOW = 0.05  # seconds: the adaptive window's ceiling
J = TypeVar("J")
R = TypeVar("R")


@dataclass(eq=False)
class _Job(Generic[J, R]):
    item: J
    key: Hashable | None
    member: Hashable | None
    taken: bool = False
    done: bool = False
    result: R | None = None
    error: Exception | None = None


@dataclass
class _Rhythm:
    """When a member's items arrive: the last one, and the usual interval between them."""

    key: Hashable
    last: float = 0.0
    interval: float = 0.0  # running average; 0 until the second item

    def arrived(self, now: float) -> None:
        if self.last:
            gap = now - self.last
            self.interval = gap if not self.interval else 0.7 * self.interval + 0.3 * gap
        self.last = now

    def due(self, by: float) -> bool:
        """Whether its next item is expected by ``by`` (and it has a rhythm yet)."""
        return bool(self.interval) and self.last + self.interval <= by


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0
    busy_s: float = 0.0  # computing (waiting for the compute thread included)

    @property
    def mean_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class Batcher(Generic[J, R]):
    """Runs ``run(items) -> results`` (one result per item, on the compute thread) over batches
    of submitted items."""

    def __init__(
        self, run: Callable[[list[J]], list[R]], max_batch: int, window: float | None = None
    ) -> None:
        """``window``: seconds a batch may wait for stepping members; None: adaptive."""
        if max_batch < 1 or (window is not None and not (math.isfinite(window) and window >= 0)):
            raise ValueError("max_batch must be >= 1 and window a non-negative number of seconds")
        self._run = run
        self.max_batch = max_batch
        self.fixed_window = window
        self.stats = BatchStats()
        self._pending: list[_Job[J, R]] = []
        self._lock = trio.Lock()  # fair: holders take turns in arrival order
        self._arrived = trio.Event()
        self._members: dict[Hashable, _Rhythm] = {}
        self._compute_s = 0.0  # running average of a batch's compute time

    @property
    def window(self) -> float:
        if self.fixed_window is not None:
            return self.fixed_window
        return min(MAX_WINDOW, self._compute_s)

    async def submit(self, item: J, key: Hashable | None = None, member: Hashable | None = None) -> R:
        """``item``'s result. ``key``: items that may share a batch (None: runs alone);
        ``member``: who submits it (a session), so later batches wait for its next item
        until it ``leave``s."""
        job: _Job[J, R] = _Job(item, key, member)
        if member is not None and key is not None:
            self._members.setdefault(member, _Rhythm(key)).arrived(time.monotonic())
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

    def leave(self, member: Hashable) -> None:
        """``member`` submits no more: batches stop waiting for it."""
        self._members.pop(member, None)

    async def _run_next(self) -> None:
        key = self._pending[0].key
        if key is not None and self.window:
            await self._gather(key)
        if not self._pending:  # everyone waiting was cancelled meanwhile
            return
        batch = self._take(self._pending[0])
        started = time.monotonic()
        with trio.CancelScope(shield=True):  # other sessions' rows are in it: finish it
            try:
                results = await run_compute(self._run, [job.item for job in batch])
            except Exception as exc:  # noqa: BLE001 - each caller gets the error its step raised
                for job in batch:
                    job.error, job.done = exc, True
                return
        for job, result in zip(batch, results, strict=True):
            job.result, job.done = result, True
        elapsed = time.monotonic() - started
        self.stats.busy_s += elapsed
        self._compute_s = elapsed if not self.stats.batches else 0.8 * self._compute_s + 0.2 * elapsed
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))

    async def _gather(self, key: Hashable) -> None:
        """Wait up to ``window`` for the members with ``key`` due within it."""
        now = time.monotonic()
        deadline = now + self.window
        for member, rhythm in list(self._members.items()):
            if now - rhythm.last > HORIZON:
                del self._members[member]
        due = {m for m, r in self._members.items() if r.key == key and r.due(deadline)}
        with trio.move_on_after(self.window):
            while True:
                waiting = [job for job in self._pending if job.key == key]
                if len(waiting) >= self.max_batch or due <= {job.member for job in waiting}:
                    return
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
