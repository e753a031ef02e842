"""MicroBatcher: concurrent requests scored in one call, results split back, failures isolated."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from loopline.serve.batcher import BatcherClosed, MicroBatcher


class Recorder:
    """A scorer that remembers its batches and can be held back (to let a queue build up)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        self.calls = 0  # counted on entry, before waiting at the gate

    def __call__(self, payloads: list[int]) -> Sequence[int]:
        self.calls += 1
        self.gate.wait(5)
        self.batches.append(list(payloads))
        if self.fail_next:
            self.fail_next = False
            raise ValueError("model exploded")
        return [p * 10 for p in payloads]


async def hold_then_release(scorer: Recorder, batcher: MicroBatcher[int, int], n: int) -> list[int]:
    """One request takes the scorer, ``n`` more queue behind it, then the scorer is freed."""
    scorer.gate.clear()
    first = asyncio.ensure_future(batcher.submit(-1))
    while not scorer.calls:  # the scorer took the first request
        await asyncio.sleep(0.001)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(n)]
    await asyncio.sleep(0.01)
    scorer.gate.set()
    assert await first == -10
    return list(await asyncio.gather(*rest))


def test_a_lone_request_is_scored_at_once() -> None:
    scorer = Recorder()
    batcher = MicroBatcher(scorer, name="t")
    assert asyncio.run(batcher.submit(4)) == 40
    assert scorer.batches == [[4]]
    batcher.close(wait=2)


def test_waiting_requests_are_scored_together_and_each_gets_its_own_result() -> None:
    scorer = Recorder()
    batcher = MicroBatcher(scorer, name="t")
    results = asyncio.run(hold_then_release(scorer, batcher, 20))
    assert results == [i * 10 for i in range(20)]
    assert scorer.batches == [[-1], list(range(20))]
    assert batcher.stats.largest == 20
    assert batcher.stats.requests == 21
    batcher.close(wait=2)


def test_max_batch_counts_rows() -> None:
    scorer = Recorder()
    batcher = MicroBatcher(scorer, max_batch=5, size=lambda p: 2, name="t")
    asyncio.run(hold_then_release(scorer, batcher, 6))
    assert [len(b) for b in scorer.batches] == [1, 2, 2, 2]  # 2 requests x 2 rows <= 5
    batcher.close(wait=2)


def test_a_failing_batch_fails_only_its_requests() -> None:
    scorer = Recorder()
    batcher = MicroBatcher(scorer, name="t")

    async def scenario() -> tuple[list[object], int]:
        scorer.gate.clear()
        first = asyncio.ensure_future(batcher.submit(-1))
        while not scorer.calls:
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        scorer.fail_next = True  # read when the first batch is scored: that one fails
        scorer.gate.set()
        outcomes = await asyncio.gather(first, *queued, return_exceptions=True)
        return list(outcomes), await batcher.submit(7)

    outcomes, after = asyncio.run(scenario())
    assert isinstance(outcomes[0], ValueError)
    assert outcomes[1:] == [0, 10, 20, 30, 40]
    assert after == 70
    assert batcher.stats.failed_batches == 1
    batcher.close(wait=2)


def test_a_wrong_number_of_results_is_an_error_for_the_batch() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda batch: [], name="t")
    with pytest.raises(RuntimeError, match="0 results for 1 requests"):
        asyncio.run(batcher.submit(1))
    batcher.close(wait=2)


def test_a_timed_out_request_is_dropped_and_the_batcher_goes_on() -> None:
    scorer = Recorder()
    batcher = MicroBatcher(scorer, name="t")

    async def scenario() -> int:
        scorer.gate.clear()
        busy = asyncio.ensure_future(batcher.submit(1))
        while not scorer.calls:  # the scorer took request 1: request 2 has to queue
            await asyncio.sleep(0.001)
        with pytest.raises(TimeoutError):
            await batcher.submit(2, timeout=0.02)
        scorer.gate.set()
        await busy
        return await batcher.submit(3, timeout=5)

    assert asyncio.run(scenario()) == 30
    assert [2] not in scorer.batches  # it timed out while queued: never scored
    batcher.close(wait=2)


def test_close_finishes_the_queue_then_refuses() -> None:
    scorer = Recorder()
    batcher = MicroBatcher(scorer, name="t")

    async def scenario() -> list[int]:
        scorer.gate.clear()
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(9)
        scorer.gate.set()
        return list(await asyncio.gather(*pending))

    assert asyncio.run(scenario()) == [0, 10, 20]
    assert batcher.closed


def test_callers_on_several_event_loops_share_one_batcher() -> None:
    batcher = MicroBatcher(Recorder(), name="t")
    results: list[int] = []

    def caller(value: int) -> None:
        results.append(asyncio.run(batcher.submit(value)))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == [0, 10, 20, 30]
    batcher.close(wait=2)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="'max_batch' parameter"):
        MicroBatcher(Recorder(), max_batch=0)
