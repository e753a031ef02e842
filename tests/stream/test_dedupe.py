"""DedupeMemory: exact membership over a time-bounded, size-bounded set of recent ids."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from loopline.stream import dedupe
from loopline.stream.dedupe import DedupeMemory, _Bucket, id_hashes


def test_remembered_ids_are_seen_and_others_are_not() -> None:
    rng = np.random.default_rng(7)
    known = [f"d{rng.integers(0, 10**9)}-{i}" for i in range(20_000)]
    memory = DedupeMemory(window=600.0)
    for start in range(0, len(known), 2_500):  # several batches into the same bucket
        memory.remember(pl.Series(known[start : start + 2_500]), at=100.0)
    probe = known[::3] + [f"new-{i}" for i in range(5_000)]
    seen = memory.seen(pl.Series(probe), at=101.0)
    known_set = set(known)
    assert seen.tolist() == [p in known_set for p in probe]
    assert len(memory) == 20_000


def test_ids_are_forgotten_after_the_window_not_before() -> None:
    memory = DedupeMemory(window=10.0)
    memory.remember(pl.Series(["a"]), at=0.0)
    memory.remember(pl.Series(["b"]), at=8.0)
    assert memory.seen(pl.Series(["a", "b"]), at=9.9).tolist() == [True, True]
    assert memory.seen(pl.Series(["a", "b"]), at=12.0).tolist() == [False, True]
    assert memory.seen(pl.Series(["a", "b"]), at=30.0).tolist() == [False, False]
    assert len(memory) == 0


def test_memory_is_bounded_by_max_ids_dropping_the_oldest() -> None:
    memory = DedupeMemory(window=1_000.0, max_ids=1_000)
    for i in range(10):
        memory.remember(pl.Series([f"{i}-{j}" for j in range(400)]), at=float(i * 200))
    assert len(memory) <= 1_400
    assert memory.seen(pl.Series(["9-0", "0-0"]), at=1_800.0).tolist() == [True, False]


def test_a_64_bit_collision_is_not_a_duplicate() -> None:
    hi, lo = id_hashes(pl.Series(["x", "y"]))
    bucket = _Bucket(slot=0, newest=0.0)
    # Two keys sharing the high half, as a 64-bit collision would.
    bucket.add(np.array([hi[0], hi[0]], np.uint64), np.array([lo[0], lo[1]], np.uint64), 0.0)
    probe_hi = np.array([hi[0], hi[0], hi[1]], np.uint64)
    probe_lo = np.array([lo[1], np.uint64(12345), lo[1]], np.uint64)
    assert bucket.contains(probe_hi, probe_lo).tolist() == [True, False, False]


def test_ids_of_any_type_are_compared_as_text() -> None:
    memory = DedupeMemory(window=60.0)
    memory.remember(pl.Series([1, 2, 3]), at=0.0)
    assert memory.seen(pl.Series(["2", "4"]), at=0.0).tolist() == [True, False]


def test_many_small_batches_stay_in_a_few_sorted_runs_and_are_all_seen() -> None:
    rng = np.random.default_rng(11)
    memory = DedupeMemory(window=600.0)
    batches = [[f"d{rng.integers(0, 10**9)}-{b}-{i}" for i in range(100)] for b in range(300)]
    for b, ids in enumerate(batches):  # slots of 75 s: [75, 150), [150, 225), [225, 300)
        memory.remember(pl.Series(ids), at=100.0 + b * 0.5)
    *older, newest = memory._buckets
    assert len(older) == 2
    assert [len(bucket.runs) for bucket in older] == [1, 1]  # compacted once left behind
    assert len(newest.runs) <= 8  # O(log n) runs, not one per batch
    for bucket in memory._buckets:
        for run in bucket.runs:
            assert (np.diff(run.hi.astype(np.float64)) >= 0).all()
    known = [i for ids in batches for i in ids]
    probe = known[::7] + [f"new-{i}" for i in range(1_000)]
    known_set = set(known)
    assert memory.seen(pl.Series(probe), at=260.0).tolist() == [p in known_set for p in probe]
    assert len(memory) == 30_000


def test_ids_checked_and_then_remembered_are_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = dedupe.id_hashes

    def counting(ids: pl.Series) -> tuple[Any, Any]:
        calls.append(ids.len())
        return real(ids)

    monkeypatch.setattr(dedupe, "id_hashes", counting)
    memory = DedupeMemory(window=60.0)
    ids = pl.Series(["a", "b"])
    assert memory.seen(ids, at=0.0).tolist() == [False, False]
    memory.remember(ids, at=0.0)
    assert calls == [2]
    assert memory.seen(pl.Series(["b", "c"]), at=1.0).tolist() == [True, False]
