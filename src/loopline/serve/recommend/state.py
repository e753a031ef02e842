"""Live state of the real-time recommender: recent histories, co-visitation, trending items.

Every event ``(user, item, weight, time)`` does three things at once:

- it is pushed onto the user's recent history (newest first, at most ``history_size``);
- it adds ``weight`` to the co-visitation count of the pair ``(i, item)``, both directions,
  for each distinct item ``i`` among the ``window`` most recent distinct items of that
  history; each item keeps its ``neighbours`` largest counts (the smallest are pruned, ties:
  the smaller id goes first, as Redis does);
- it adds ``weight`` to the item's trending score, which halves every ``half_life`` seconds.
  The score is kept in log space, ``log(sum(w * 2 ** ((t - EPOCH) / half_life)))``, so
  stored scores never need rewriting as time passes: ranking by the stored value is ranking
  by the decayed score, and :meth:`RecommenderState.snapshot` converts it to the value now.

:class:`MemoryState` keeps this in the process (the default); ``RedisState``
(``loopline.serve.recommend.redis_state``) shares it between replicas. Both pass the same
conformance tests (tests/serve/recommend/test_state_conformance.py), through the sync methods
and through their async twins (``arecord``, ``asnapshot``: what an event loop awaits).

>>> state = MemoryState(history_size=3, neighbours=2, half_life=3600.0)
>>> state.record("u1", "a", 1.0, 1000.0)
>>> state.record("u1", "b", 2.0, 1001.0)
>>> snap = state.snapshot("u1", now=1001.0)
>>> [(e.item, e.weight) for e in snap.history]
[('b', 2.0), ('a', 1.0)]
>>> snap.covisits["a"]
{'b': 2.0}
>>> [item for item, _ in snap.trending]
['b', 'a']
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "EPOCH",
    "HistoryEntry",
    "MemoryState",
    "RecommenderState",
    "Snapshot",
    "log_decay",
    "log_increment",
    "logaddexp",
]

EPOCH = 1_767_225_600.0
"""2026-01-01T00:00:00Z: the origin of the log-space trending scores (keeps them small)."""

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class HistoryEntry:
    """One event in a user's recent history."""

    item: str
    weight: float
    timestamp: float  # seconds since the Unix epoch


@dataclass(frozen=True)
class Snapshot:
    """What one recommendation reads from the live state, in one go.

    ``history`` is newest first; ``covisits`` maps each of the ``window`` most recent
    distinct items of the history to its live neighbours ``{item: count}``; ``trending``
    holds the top items with their decayed score at the time of the read, largest first
    (ties: larger id first).
    """

    history: list[HistoryEntry]
    covisits: dict[str, dict[str, float]] = field(default_factory=dict)
    trending: list[tuple[str, float]] = field(default_factory=list)


@runtime_checkable
class RecommenderState(Protocol):
    """Where the live signal lives: in the process or in Redis."""

    history_size: int
    neighbours: int
    window: int
    half_life: float

    def record(self, user: str, item: str, weight: float, timestamp: float) -> None:
        """Apply one event (history, co-visitation, trending) atomically."""
        ...

    def snapshot(self, user: str, *, trending: int = 100, now: float | None = None) -> Snapshot:
        """The user's history, the live neighbours of its recent items, the top trending."""
        ...

    async def arecord(self, user: str, item: str, weight: float, timestamp: float) -> None:
        """:meth:`record` for an event loop (Redis: awaits the round trip)."""
        ...

    async def asnapshot(
        self, user: str, *, trending: int = 100, now: float | None = None
    ) -> Snapshot:
        """:meth:`snapshot` for an event loop (Redis: awaits the round trip)."""
        ...

    def clear(self) -> None:
        """Forget everything (tests; a model whose ids mean something else)."""
        ...

    def close(self) -> None:
        """Release connections (those of the async methods too, when their event loop runs
        in another thread or is not running)."""
        ...

    async def aclose(self) -> None:
        """Release the async methods' connections, in the event loop that used them."""
        ...


def log_increment(weight: float, timestamp: float, half_life: float) -> float:
    """The log-space trending increment of one event: ``log(w) + ln 2 * (t - EPOCH) / hl``.

    >>> round(log_increment(1.0, EPOCH + 3600.0, 3600.0) / math.log(2), 9)
    1.0
    """
    return math.log(weight) + _LN2 * (timestamp - EPOCH) / half_life


def logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow (the same formula as the Redis script)."""
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def log_decay(now: float, half_life: float) -> float:
    """What a stored log-space score loses by ``now``: its trending score at ``now`` is
    ``exp(log_score - log_decay(now, half_life))``.

    >>> score = log_increment(4.0, EPOCH, 3600.0)   # 4 at EPOCH, 1 two half-lives later
    >>> round(math.exp(score - log_decay(EPOCH + 7200.0, 3600.0)), 9)
    1.0
    """
    return _LN2 * (now - EPOCH) / half_life


def _prune_one(counts: dict[str, float]) -> None:
    """Drop the smallest count (ties: the smaller id), as Redis ``ZREMRANGEBYRANK 0 0``."""
    low = min(counts.values())
    del counts[min(k for k, v in counts.items() if v == low)]


class _Trending:
    """Log-space trending scores in a NumPy array: top-n and eviction without a Python sort."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.slots: dict[str, int] = {}
        self.ids: list[str] = []
        self.scores = np.full(min(capacity, 1024), -np.inf)
        self._top: tuple[int, list[str], np.ndarray] | None = None  # until the next add

    def add(self, item: str, increment: float) -> None:
        self._top = None
        slot = self.slots.get(item)
        if slot is not None:
            self.scores[slot] = logaddexp(float(self.scores[slot]), increment)
            return
        if len(self.ids) < self.capacity:
            slot = len(self.ids)
            if slot == self.scores.size:
                grown = np.full(min(self.capacity, 2 * slot), -np.inf)
                grown[:slot] = self.scores
                self.scores = grown
            self.ids.append(item)
        else:  # full: Redis adds, then drops the smallest (ties: smaller id), maybe this one
            low = float(self.scores.min())
            tied = np.flatnonzero(self.scores == low).tolist()
            slot = min(tied, key=self.ids.__getitem__)
            if (increment, item) < (low, self.ids[slot]):
                return
            del self.slots[self.ids[slot]]
            self.ids[slot] = item
        self.slots[item] = slot
        self.scores[slot] = increment

    def top(self, n: int) -> tuple[list[str], np.ndarray]:
        """The ``n`` largest log scores, largest first (ties: larger id first), and their ids.

        Kept until the next :meth:`add`: reads between two events share one sort (a top-n
        is the first n of any larger top, the order being total)."""
        cached = self._top
        if cached is not None and cached[0] >= n:
            return cached[1][:n], cached[2][:n]
        ids, values = self._sorted(n)
        self._top = (n, ids, values)
        return ids, values

    def _sorted(self, n: int) -> tuple[list[str], np.ndarray]:
        used = self.scores[: len(self.ids)]
        if n <= 0 or used.size == 0:
            return [], np.empty(0)
        if n < used.size:
            part = np.argpartition(-used, n - 1)[:n]
            chosen = np.flatnonzero(used >= used[part].min())
        else:
            chosen = np.arange(used.size)
        values = used[chosen]
        order = np.argsort(-values, kind="stable")
        ids = [self.ids[i] for i in chosen[order].tolist()]
        values = values[order]
        if values.size > 1 and bool((values[1:] == values[:-1]).any()):  # ties: by id, desc
            pairs = sorted(zip(values.tolist(), ids, strict=True), reverse=True)
            ids = [item for _, item in pairs]
            values = np.array([v for v, _ in pairs])
        return ids[:n], values[:n]


class MemoryState:
    """In-process live state: thread-safe and bounded everywhere.

    Besides the per-user and per-item bounds of :class:`RecommenderState`, it keeps at most
    ``max_users`` histories and ``max_items`` co-visitation lists (the least recently updated
    go first) and ``trending_size`` trending items (the smallest score goes first).
    """

    def __init__(
        self,
        *,
        history_size: int = 50,
        neighbours: int = 50,
        window: int = 10,
        half_life: float = 3600.0,
        trending_size: int = 10_000,
        max_users: int = 20_000,
        max_items: int = 20_000,
    ) -> None:
        self.history_size = history_size
        self.neighbours = neighbours
        self.window = window
        self.half_life = half_life
        self.trending_size = trending_size
        self.max_users = max_users
        self.max_items = max_items
        self._lock = threading.Lock()
        self._history: OrderedDict[str, deque[HistoryEntry]] = OrderedDict()
        self._covisit: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._trending = _Trending(trending_size)

    def record(self, user: str, item: str, weight: float, timestamp: float) -> None:
        with self._lock:
            history = self._history.get(user)
            if history is None:
                history = self._history[user] = deque(maxlen=self.history_size)
                if len(self._history) > self.max_users:
                    self._history.popitem(last=False)
            else:
                self._history.move_to_end(user)
            others = [i for i in _recent(history, self.window) if i != item]
            if others:
                mine = self._counts(item)
                for other in others:
                    theirs = self._counts(other)
                    theirs[item] = theirs.get(item, 0.0) + weight
                    if len(theirs) > self.neighbours:
                        _prune_one(theirs)
                    mine[other] = mine.get(other, 0.0) + weight
                while len(mine) > self.neighbours:
                    _prune_one(mine)
                while len(self._covisit) > self.max_items:
                    self._covisit.popitem(last=False)
            history.appendleft(HistoryEntry(item, weight, timestamp))
            self._trending.add(item, log_increment(weight, timestamp, self.half_life))

    def _counts(self, item: str) -> dict[str, float]:
        counts = self._covisit.get(item)
        if counts is None:
            counts = self._covisit[item] = {}
        else:
            self._covisit.move_to_end(item)
        return counts

    def snapshot(self, user: str, *, trending: int = 100, now: float | None = None) -> Snapshot:
        now = time.time() if now is None else now
        with self._lock:
            history = list(self._history.get(user, ()))
            covisits = {i: dict(self._covisit.get(i, {})) for i in _recent(history, self.window)}
            items, scores = self._trending.top(trending)
        values = np.exp(scores - log_decay(now, self.half_life)).tolist()
        trending_now = list(zip(items, values, strict=True))
        return Snapshot(history=history, covisits=covisits, trending=trending_now)

    async def arecord(self, user: str, item: str, weight: float, timestamp: float) -> None:
        """:meth:`record` (in memory: nothing to wait for)."""
        self.record(user, item, weight, timestamp)

    async def asnapshot(
        self, user: str, *, trending: int = 100, now: float | None = None
    ) -> Snapshot:
        """:meth:`snapshot` (in memory: nothing to wait for)."""
        return self.snapshot(user, trending=trending, now=now)

    def clear(self) -> None:
        with self._lock:
            self._history.clear()
            self._covisit.clear()
            self._trending = _Trending(self.trending_size)

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


def _recent(history: deque[HistoryEntry] | list[HistoryEntry], window: int) -> list[str]:
    """The ``window`` most recent distinct items of a history (newest first)."""
    items: dict[str, None] = {}
    for entry in history:
        if entry.item not in items:
            items[entry.item] = None
            if len(items) == window:
                break
    return list(items)
