"""One conformance suite for every recommender state: in-process and Redis."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conftest import service_url

from loopline.serve.recommend.state import EPOCH, MemoryState, RecommenderState, Snapshot

T0 = EPOCH + 1_000_000.0
MakeState = Callable[..., Any]


class AsyncDriven:
    """A state driven through its async methods (``arecord``, ``asnapshot``), in an event
    loop of its own that lives as long as the state (as a server's loop would)."""

    def __init__(self, state: RecommenderState) -> None:
        self.state = state
        self.runner = asyncio.Runner()

    def record(self, user: str, item: str, weight: float, timestamp: float) -> None:
        self.runner.run(self.state.arecord(user, item, weight, timestamp))

    def snapshot(self, user: str, **options: Any) -> Snapshot:
        return self.runner.run(self.state.asnapshot(user, **options))

    def record_concurrently(self, calls: list[list[tuple[str, str, float, float]]]) -> None:
        """Each list of events in a task of its own, the tasks interleaving."""

        async def send(events: list[tuple[str, str, float, float]]) -> None:
            for event in events:
                await self.state.arecord(*event)

        async def send_all() -> None:
            await asyncio.gather(*(send(events) for events in calls))

        self.runner.run(send_all())

    def clear(self) -> None:
        self.state.clear()

    def close(self) -> None:
        self.runner.run(self.state.aclose())
        self.runner.close()
        self.state.close()


@pytest.fixture(
    params=[
        "memory",
        "memory-async",
        pytest.param("redis", marks=pytest.mark.services),
        pytest.param("redis-async", marks=pytest.mark.services),
    ]
)
def make_state(request: pytest.FixtureRequest) -> Iterator[MakeState]:
    """A factory of fresh states of one kind (Redis: a unique key prefix, deleted after),
    used through the sync methods or (``-async``) through the async ones."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        state: RecommenderState
        if request.param.startswith("memory"):
            state = MemoryState(**options)
        else:
            from loopline.serve.recommend.redis_state import RedisState

            prefix = f"loopline:test:{uuid.uuid4().hex[:10]}:"
            state = RedisState(service_url("redis"), prefix=prefix, **options)
        driven = AsyncDriven(state) if request.param.endswith("-async") else state
        made.append(driven)
        return driven

    yield make
    for state in made:
        state.clear()
        state.close()


def test_history_is_newest_first_and_bounded(make_state: MakeState) -> None:
    state = make_state(history_size=3)
    for n, item in enumerate("abcde"):
        state.record("u1", item, float(n + 1), T0 + n)
    snap = state.snapshot("u1", now=T0 + 5)
    assert [(e.item, e.weight, e.timestamp) for e in snap.history] == [
        ("e", 5.0, T0 + 4),
        ("d", 4.0, T0 + 3),
        ("c", 3.0, T0 + 2),
    ]
    assert state.snapshot("someone else").history == []


def test_covisit_counts_both_directions_with_the_new_events_weight(make_state: MakeState) -> None:
    state = make_state()
    state.record("u1", "a", 1.0, T0)
    state.record("u1", "b", 2.0, T0 + 1)
    state.record("u1", "a", 3.0, T0 + 2)  # a again: pairs with b only, never with itself
    state.record("u2", "a", 1.0, T0 + 3)
    state.record("u2", "c", 1.0, T0 + 4)
    snap = state.snapshot("u1")
    assert sorted(snap.covisits) == ["a", "b"]
    assert snap.covisits["a"] == {"b": 5.0, "c": 1.0}
    assert snap.covisits["b"] == {"a": 5.0}


def test_covisit_keeps_the_largest_neighbours(make_state: MakeState) -> None:
    state = make_state(neighbours=2)
    # x is co-visited with p (3 users), q (2 users), r (1 user), s (1 user)
    for user, other in [("1", "p"), ("2", "p"), ("3", "p"), ("4", "q"), ("5", "q")]:
        state.record(user, "x", 1.0, T0)
        state.record(user, other, 1.0, T0 + 1)
    state.record("6", "x", 1.0, T0)
    state.record("6", "r", 1.0, T0 + 1)  # joins x's list as the smallest: pruned at once
    state.record("7", "x", 1.0, T0)
    snap = state.snapshot("7")
    assert snap.covisits["x"] == {"p": 3.0, "q": 2.0}


def test_covisit_ties_prune_the_smaller_id_first(make_state: MakeState) -> None:
    state = make_state(neighbours=2)
    state.record("u", "x", 1.0, T0)
    for n, other in enumerate(["m", "k", "z"]):
        state.record(f"v{n}", "x", 1.0, T0)
        state.record(f"v{n}", other, 1.0, T0 + 1)
    snap = state.snapshot("u")
    assert snap.covisits["x"] == {"m": 1.0, "z": 1.0}


def test_covisit_pairs_only_within_the_window(make_state: MakeState) -> None:
    state = make_state(window=2)
    for n, item in enumerate("abc"):
        state.record("u", item, 1.0, T0 + n)
    state.record("u", "d", 1.0, T0 + 3)  # history [c, b, a]: d pairs with c and b only
    snap = state.snapshot("u")
    assert sorted(snap.covisits) == ["c", "d"]
    assert snap.covisits["d"] == {"b": 1.0, "c": 1.0}


def test_trending_decays_with_the_half_life(make_state: MakeState) -> None:
    state = make_state(half_life=100.0)
    state.record("u1", "old", 4.0, T0)  # 4 at T0, 1 at T0 + 200
    state.record("u2", "new", 1.5, T0 + 200)
    state.record("u3", "mid", 1.0, T0 + 100)
    state.record("u3", "mid", 1.0, T0 + 100)  # 2 at T0 + 100, 1 at T0 + 200
    top = state.snapshot("nobody", now=T0 + 200).trending
    assert [item for item, _ in top] == ["new", "old", "mid"]
    assert [score for _, score in top] == pytest.approx([1.5, 1.0, 1.0])
    later = state.snapshot("nobody", trending=1, now=T0 + 300).trending
    assert later == [("new", pytest.approx(0.75))]


def test_trending_keeps_the_top_items(make_state: MakeState) -> None:
    state = make_state(trending_size=3)
    for n, item in enumerate("abcde"):
        state.record("u", item, float(n + 1), T0)
    state.record("u", "a", 0.5, T0)  # a was pruned: it comes back with 0.5 and is pruned again
    top = state.snapshot("u", trending=10, now=T0).trending
    assert [item for item, _ in top] == ["e", "d", "c"]
    assert [score for _, score in top] == pytest.approx([5.0, 4.0, 3.0])


def test_states_are_separate_by_prefix_or_instance(make_state: MakeState) -> None:
    one, two = make_state(), make_state()
    one.record("u", "a", 1.0, T0)
    assert two.snapshot("u").history == []
    assert two.snapshot("u").trending == []


def test_concurrent_events_are_all_counted(make_state: MakeState) -> None:
    state = make_state(history_size=1000, window=1)
    calls = [[("u", f"i{worker}", 1.0, T0 + n) for n in range(50)] for worker in range(4)]
    if isinstance(state, AsyncDriven):
        state.record_concurrently(calls)
    else:
        threads = [
            threading.Thread(target=lambda events=events: [state.record(*e) for e in events])
            for events in calls
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    snap = state.snapshot("u", now=T0)
    assert len(snap.history) == 200
    assert sum(score for _, score in snap.trending) > 0
    assert sorted(item for item, _ in snap.trending) == ["i0", "i1", "i2", "i3"]


def test_trending_reads_between_events_see_each_new_event(make_state: MakeState) -> None:
    state = make_state()
    state.record("u", "a", 1.0, T0)
    state.record("u", "b", 2.0, T0)
    assert [item for item, _ in state.snapshot("x", trending=2, now=T0).trending] == ["b", "a"]
    assert [item for item, _ in state.snapshot("x", trending=1, now=T0).trending] == ["b"]
    state.record("v", "a", 1.5, T0)  # a: 2.5 now
    top = state.snapshot("x", trending=2, now=T0).trending
    assert top == [("a", pytest.approx(2.5)), ("b", pytest.approx(2.0))]
    state.record("v", "c", 3.0, T0)
    assert [item for item, _ in state.snapshot("x", trending=3, now=T0).trending] == [
        "c",
        "a",
        "b",
    ]
