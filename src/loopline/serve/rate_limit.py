"""Per-caller rate limits: one token bucket per API key or token subject.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a request
takes one token or is refused with the seconds to wait (``Retry-After``). Buckets live in
this process (with several uvicorn workers each worker limits on its own) and memory is
bounded: past ``max_buckets`` the least recently used buckets go, idle (full) ones first.

>>> clock = [0.0]
>>> limiter = TokenBucketLimiter(clock=lambda: clock[0])
>>> [limiter.acquire("ci", rate=1.0, burst=2) for _ in range(3)]
[0.0, 0.0, 1.0]
>>> clock[0] = 1.0
>>> limiter.acquire("ci", rate=1.0, burst=2)
0.0
>>> retry_after(0.2), retry_after(1.5)
(1, 2)
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBucketLimiter", "default_burst", "retry_after"]


def default_burst(rate: float, burst: int | None) -> int:
    """``burst`` if set, else twice the rate (at least 1)."""
    return burst if burst is not None else max(1, math.ceil(2 * rate))


def retry_after(wait: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1."""
    return max(1, math.ceil(wait))


class TokenBucketLimiter:
    """Token buckets by key; thread-safe (one lock, a few microseconds held)."""

    def __init__(
        self, *, max_buckets: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
        self.max_buckets = max_buckets
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [tokens, last refill time, rate, burst]; most recently used last
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str, *, rate: float, burst: int) -> float:
        """Take one token from ``key``'s bucket: 0.0 if allowed, else the seconds until a
        token is there."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_buckets:
                    self._evict(now)
                bucket = [float(burst), now, rate, float(burst)]
                self._buckets[key] = bucket
            else:
                self._buckets.move_to_end(key)
                bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
                bucket[1], bucket[2], bucket[3] = now, rate, float(burst)
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / rate

    def _evict(self, now: float) -> None:
        """Drop idle buckets (refilled to full: the same as a new one), oldest first; if
        too many are busy, drop the least recently used ones."""
        # down to 90 % of the cap, so the scan runs once per many new keys, not every time
        excess = len(self._buckets) - self.max_buckets * 9 // 10
        for key, (tokens, last, rate, burst) in list(self._buckets.items()):
            if excess <= 0:
                return
            if tokens + (now - last) * rate >= burst:
                del self._buckets[key]
                excess -= 1
        while excess > 0:
            self._buckets.popitem(last=False)
            excess -= 1
