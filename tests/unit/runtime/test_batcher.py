"""Continuous batching's scheduling: what arrives while a batch runs forms the next one, in
arrival order, capped; work without a key runs alone; a cancelled waiter leaves no trace;
errors reach every caller of the batch; a short batch waits for the last one's size."""

import threading

import pytest
import trio

from hydra.runtime.batcher import Batcher


class Recorder:
    """A batch function that records its batches, blocking until released when ``gate`` is set."""

    def __init__(self, gate: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        if not gate:
            self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(5)
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * 10 for i in items]


async def submit_all(batcher: Batcher, items: list[int], keys: list[str | None]) -> dict[int, int]:
    results: dict[int, int] = {}

    async def one(item: int, key: str | None) -> None:
        results[item] = await batcher.submit(item, key)

    async with trio.open_nursery() as nursery:
        for item, key in zip(items, keys, strict=True):
            nursery.start_soon(one, item, key)
            await trio.sleep(0)  # start in this order
    return results


async def test_work_arriving_during_a_batch_runs_together_next_in_order_and_capped() -> None:
    run = Recorder(gate=True)
    batcher = Batcher(run, max_batch=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.submit, 1, "d")  # alone: nothing else waits yet
        await trio.sleep(0.05)
        nursery.start_soon(submit_all, batcher, [2, 3, 4, 5, 6], ["d", None, "d", "d", "d"])
        await trio.sleep(0.05)
        run.gate.set()
    assert run.batches == [[1], [2, 4, 5], [3], [6]]
    assert batcher.stats.largest == 3 and batcher.stats.batches == 4


async def test_results_go_to_their_callers() -> None:
    batcher = Batcher(Recorder(), max_batch=8)
    results = await submit_all(batcher, [1, 2, 3, 4], ["d"] * 4)
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}


async def test_a_cancelled_waiter_is_never_run() -> None:
    run = Recorder(gate=True)
    batcher = Batcher(run, max_batch=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.submit, 1, "d")
        await trio.sleep(0.05)
        with trio.move_on_after(0.05):
            await batcher.submit(2, "d")
        nursery.start_soon(batcher.submit, 3, "d")
        await trio.sleep(0.05)
        run.gate.set()
    assert run.batches == [[1], [3]]


async def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs() -> None:
    run = Recorder(gate=True)
    batcher = Batcher(run, max_batch=8)
    failures: list[Exception] = []

    async def expect_failure(item: int) -> None:
        with pytest.raises(ValueError, match="negative") as caught:
            await batcher.submit(item, "d")
        failures.append(caught.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.submit, 1, "d")
        await trio.sleep(0.05)
        nursery.start_soon(expect_failure, -1)
        nursery.start_soon(expect_failure, 2)
        await trio.sleep(0.05)
        run.gate.set()
    assert len(failures) == 2
    assert await batcher.submit(5, "d") == 50


async def test_a_batch_waits_for_members_due_and_not_for_those_gone_or_later() -> None:
    run = Recorder()
    batcher = Batcher(run, max_batch=8, window=0.2)
    started = trio.current_time()
    assert await batcher.submit(1, "d", "a") == 10
    assert trio.current_time() - started < 0.15, "a lone member waited for company"

    async def step(item: int, member: str, delay: float) -> None:
        await trio.sleep(delay)
        await batcher.submit(item, "d", member)

    for item in (2, 4):  # b joins; both step every 0.3 s
        await trio.sleep(0.3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(step, item, "a", 0.0)
            nursery.start_soon(step, item + 1, "b", 0.0)
    await trio.sleep(0.3)
    async with trio.open_nursery() as nursery:  # b is late, but due: a's step waits for it
        nursery.start_soon(step, 6, "a", 0.0)
        nursery.start_soon(step, 7, "b", 0.1)
    assert run.batches[-1] == [6, 7], "the member 0.1 s late should have joined the batch"
    started = trio.current_time()
    await batcher.submit(8, "d", "a")  # b is due in 0.3 s, after the window
    assert trio.current_time() - started < 0.15, "a batch waited for a member not due"
    await trio.sleep(0.3)
    batcher.leave("b")
    started = trio.current_time()
    await batcher.submit(9, "d", "a")
    assert trio.current_time() - started < 0.15, "a batch waited for a member that left"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_batch=4, window=float("nan"))
