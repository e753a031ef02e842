"""Which message ids were seen recently: the processor's duplicate filter.

A :class:`DedupeMemory` remembers the ids of stored messages for at least ``window``
seconds (processing time), so a device re-sending a reading, or a broker redelivering a
message whose ack was lost in a crash, is dropped instead of stored twice. After a restart
the processor seeds it from the readings stored in the last ``window``.

Memory is bounded and vectorised: each id is hashed (two independent 64-bit Polars hashes,
so 128 bits: a false "duplicate" is as likely as a 128-bit collision, ~1e-25 for millions
of ids) and kept in sorted NumPy arrays, 16 bytes per id. Ids live in time buckets of
``window / 8`` seconds; a bucket is forgotten as a whole once all its ids are older than the
window, and the oldest buckets go early if more than ``max_ids`` ids are held. A bucket
being filled holds a few sorted runs (merged like a binary counter), so remembering a
micro-batch costs the same whether the bucket holds a thousand ids or half a million.

>>> import polars as pl
>>> memory = DedupeMemory(window=60.0)
>>> memory.remember(pl.Series(["a", "b"]), at=0.0)
>>> memory.seen(pl.Series(["b", "c"]), at=1.0).tolist()
[True, False]
>>> memory.seen(pl.Series(["b"]), at=200.0).tolist()  # past the window: forgotten
[False]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

_SEED_HI = 0x5EED_0001
_SEED_LO = 0x5EED_0002

U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]


def id_hashes(ids: pl.Series) -> tuple[U64, U64]:
    """Two independent 64-bit hashes of each id (as text): the 128-bit key remembered."""
    text = ids.cast(pl.String)
    hi = text.hash(seed=_SEED_HI).to_numpy()
    lo = text.hash(seed=_SEED_LO).to_numpy()
    return hi.astype(np.uint64, copy=False), lo.astype(np.uint64, copy=False)


@dataclass
class _Run:
    """Ids sorted by ``hi`` (``lo`` in the same order)."""

    hi: U64
    lo: U64

    @classmethod
    def of(cls, hi: U64, lo: U64) -> _Run:
        order = np.argsort(hi, kind="stable")
        return cls(hi[order], lo[order])

    def merged(self, newer: _Run) -> _Run:
        """Both runs as one sorted run, in time linear in their sizes (no sort)."""
        at = np.searchsorted(self.hi, newer.hi, side="right") + np.arange(newer.hi.size)
        older = np.ones(self.hi.size + newer.hi.size, dtype=bool)
        older[at] = False
        hi, lo = np.empty(older.size, np.uint64), np.empty(older.size, np.uint64)
        hi[at], lo[at] = newer.hi, newer.lo
        hi[older], lo[older] = self.hi, self.lo
        return _Run(hi, lo)

    def contains(self, hi: U64, lo: U64) -> Mask:
        if self.hi.size == 0 or hi.size == 0:
            return np.zeros(hi.size, dtype=bool)
        pos = np.searchsorted(self.hi, hi, side="left")
        inside = pos < self.hi.size
        clipped = np.minimum(pos, self.hi.size - 1)
        hit = inside & (self.hi[clipped] == hi)
        found: Mask = hit & (self.lo[clipped] == lo)
        # Equal ``hi`` with another ``lo`` (a 64-bit collision): scan that run of equal hi.
        for i in np.flatnonzero(hit & ~found):
            j = int(pos[i])
            while j < self.hi.size and self.hi[j] == hi[i]:
                if self.lo[j] == lo[i]:
                    found[i] = True
                    break
                j += 1
        return found


@dataclass
class _Bucket:
    """Ids first remembered in one time slot, as a few sorted runs.

    Each micro-batch adds a small run; a run is merged into the one before it while that
    one is at most twice its size, so a bucket holds O(log n) runs and an id is merged
    O(log n) times: adding stays cheap however full the bucket is (merging every batch
    into one sorted array would cost time linear in the bucket). A bucket no longer
    written to is merged into one run (:meth:`compact`).
    """

    slot: int
    newest: float
    runs: list[_Run] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(run.hi.size for run in self.runs)

    def add(self, hi: U64, lo: U64, at: float) -> None:
        self.runs.append(_Run.of(hi, lo))
        while len(self.runs) > 1 and self.runs[-2].hi.size <= 2 * self.runs[-1].hi.size:
            newer = self.runs.pop()
            self.runs[-1] = self.runs[-1].merged(newer)
        self.newest = max(self.newest, at)

    def compact(self) -> None:
        while len(self.runs) > 1:
            newer = self.runs.pop()
            self.runs[-1] = self.runs[-1].merged(newer)

    def contains(self, hi: U64, lo: U64) -> Mask:
        found = np.zeros(hi.size, dtype=bool)
        for run in self.runs:
            found |= run.contains(hi, lo)
        return found


class DedupeMemory:
    """Ids remembered for at least ``window`` seconds, at most about ``max_ids`` of them."""

    def __init__(self, window: float, *, max_ids: int = 4_000_000) -> None:
        self.window = float(window)
        self.max_ids = int(max_ids)
        self._slot_seconds = max(self.window / 8.0, 1.0)
        self._buckets: deque[_Bucket] = deque()
        # The ids last hashed and their hashes: remembering the ids just checked by
        # ``seen`` (the same Series object, held so its id cannot be reused) hashes once.
        self._hashed: tuple[pl.Series, U64, U64] | None = None

    def __len__(self) -> int:
        return sum(b.size for b in self._buckets)

    def seen(self, ids: pl.Series, *, at: float) -> Mask:
        """For each id, whether it was remembered within the window before ``at``."""
        self._expire(at)
        hi, lo = self._hashes(ids)
        found = np.zeros(hi.size, dtype=bool)
        for bucket in self._buckets:
            found |= bucket.contains(hi, lo)
        return found

    def remember(self, ids: pl.Series, *, at: float) -> None:
        """Remember ``ids`` as seen at ``at`` (seconds, e.g. ``time.time()``)."""
        if ids.len() == 0:
            return
        hi, lo = self._hashes(ids)
        slot = int(at // self._slot_seconds)
        if not self._buckets or self._buckets[-1].slot < slot:
            if self._buckets:
                self._buckets[-1].compact()
            self._buckets.append(_Bucket(slot=slot, newest=at))
        # A late ``at`` (seeding from the store) goes into the newest bucket: kept longer.
        self._buckets[-1].add(hi, lo, at)
        self._expire(at)

    def _hashes(self, ids: pl.Series) -> tuple[U64, U64]:
        if self._hashed is not None and self._hashed[0] is ids:
            return self._hashed[1], self._hashed[2]
        hi, lo = id_hashes(ids)
        self._hashed = (ids, hi, lo)
        return hi, lo

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0].newest < now - self.window:
            self._buckets.popleft()
        while len(self._buckets) > 1 and len(self) > self.max_ids:
            self._buckets.popleft()


__all__ = ["DedupeMemory", "id_hashes"]
