"""Micro-batching: concurrent requests for one model version scored together in one call.

A :class:`MicroBatcher` owns one scoring thread. Requests (``await batcher.submit(payload)``)
queue up; whenever the thread is free it takes every waiting request (up to ``max_batch`` rows),
calls ``score`` once with all their payloads and hands each caller its own result. There is no
artificial wait: a lone request is scored at once, and batches form by themselves under load
(the requests that arrive while a batch is being scored make up the next one). A failing
``score`` fails the requests of that batch only; the thread carries on.

>>> import asyncio
>>> batcher = MicroBatcher(lambda batch: [x * 2 for x in batch], name="double")
>>> async def main() -> list[int]:
...     return list(await asyncio.gather(*(batcher.submit(i) for i in range(4))))
>>> asyncio.run(main())
[0, 2, 4, 6]
>>> batcher.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from loopline.errors import NotServedError

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")


class BatcherClosed(NotServedError):
    """The batcher was closed (its model version was swapped out): submit to the new one."""


@dataclass
class BatchStats:
    """What a batcher has done so far (read without a lock: a snapshot, roughly)."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest: int = 0  # most requests in one batch
    failed_batches: int = 0


class _Waiting:
    __slots__ = ("future", "loop", "payload", "size")

    def __init__(
        self, payload: Any, size: int, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.payload = payload
        self.size = size
        self.future = future
        self.loop = loop


class MicroBatcher(Generic[P, R]):
    """Score concurrent requests together: ``score(payloads) -> one result per payload``.

    ``size(payload)`` is its number of rows (for ``max_batch``; default 1 per payload).
    ``on_batch(requests, rows, seconds)`` is called after each batch (metrics), in the
    scoring thread. The thread starts with the first request.
    """

    def __init__(
        self,
        score: Callable[[list[P]], Sequence[R]],
        *,
        max_batch: int = 256,
        size: Callable[[P], int] | None = None,
        name: str = "model",
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(
                f"The 'max_batch' parameter of MicroBatcher must be >= 1. Got {max_batch} instead."
            )
        self._score = score
        self._size = size
        self.max_batch = max_batch
        self.name = name
        self._on_batch = on_batch
        self._pending: deque[_Waiting] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.stats = BatchStats()

    async def submit(self, payload: P, *, timeout: float | None = None) -> R:
        """Queue ``payload`` and wait for its result; :class:`TimeoutError` after ``timeout``
        seconds (the request is then dropped from the queue if not scored yet),
        :class:`BatcherClosed` once :meth:`close` was called."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        size = self._size(payload) if self._size is not None else 1
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"the scorer of {self.name} is closed", model=self.name)
            self._pending.append(_Waiting(payload, size, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"score-{self.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        if timeout is None:
            return await future
        return await asyncio.wait_for(future, timeout)

    def close(self, wait: float | None = None) -> None:
        """Stop taking requests; the queued ones are still scored. ``wait``: seconds to wait
        for the thread to finish them (None: do not wait)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and wait is not None:
            thread.join(wait)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Requests waiting to be scored."""
        return len(self._pending)

    def _take(self) -> list[_Waiting] | None:
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._pending.popleft()]
            rows = batch[0].size
            while self._pending and rows + self._pending[0].size <= self.max_batch:
                item = self._pending.popleft()
                rows += item.size
                batch.append(item)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [item for item in batch if not item.future.done()]  # not timed out
            if live:
                self._run_batch(live)

    def _run_batch(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        rows = sum(item.size for item in batch)
        stats = self.stats  # counted before the callers wake up, so they see their batch
        stats.batches += 1
        stats.requests += len(batch)
        stats.rows += rows
        stats.largest = max(stats.largest, len(batch))
        results: list[Any] | None = None
        error: Exception | None = None
        try:
            results = list(self._score([item.payload for item in batch]))
            if len(results) != len(batch):
                raise RuntimeError(
                    f"score returned {len(results)} results for {len(batch)} requests"
                )
        except Exception as exc:  # noqa: BLE001 - handed to the callers of this batch
            log.warning(
                "scoring a batch of %d request(s) for %s failed: %s", len(batch), self.name, exc
            )
            stats.failed_batches += 1
            results, error = None, exc
        if self._on_batch is not None:
            self._on_batch(len(batch), rows, time.perf_counter() - started)
        _deliver(batch, results, error)


def _deliver(batch: list[_Waiting], results: list[Any] | None, error: BaseException | None) -> None:
    """Settle the futures: one wake-up call per event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for i, item in enumerate(batch):
        outcome = error if results is None else results[i]
        by_loop.setdefault(item.loop, []).append((item.future, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, settled, error is not None)


def _settle(settled: list[tuple[asyncio.Future[Any], Any]], failed: bool) -> None:
    for future, outcome in settled:
        if future.done():  # timed out or cancelled meanwhile
            continue
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
