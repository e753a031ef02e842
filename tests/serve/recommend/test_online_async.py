"""OnlineRecommender's async path (arecord, arecommend) on both states, Redis for real."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from tests.conftest import service_url

from loopline.config.serving import RecommenderServeConfig
from loopline.errors import ServeError
from loopline.serve.recommend.online import OnlineRecommender
from loopline.serve.recommend.state import MemoryState, RecommenderState
from loopline.train.recommender import RecommenderModel

EVENTS = [
    ("alice", "i06", "view"),
    ("alice", "i07", "click"),
    ("v1", "i03", "view"),
    ("v1", "brand-new", "purchase"),
    ("dave", "i03", "view"),
    ("erin", "i11", "purchase"),
    ("erin", "i10", "purchase"),
]
ASKS = [("alice", "blend"), ("dave", "blend"), ("dave", "covisit"), ("erin", "als")]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
def kind(request: pytest.FixtureRequest) -> str:
    """``"memory"`` or the Redis URL (see :func:`state_for`)."""
    return "memory" if request.param == "memory" else service_url("redis")


def state_for(kind: str) -> RecommenderState:
    """A fresh state: in memory, or in Redis under a unique key prefix."""
    if kind == "memory":
        return MemoryState(window=20)
    from loopline.serve.recommend.redis_state import RedisState

    prefix = f"loopline:test:{uuid.uuid4().hex[:10]}:"
    return RedisState(str(kind), prefix=prefix, window=20)


def online(model: RecommenderModel, state: RecommenderState) -> OnlineRecommender:
    return OnlineRecommender(model, RecommenderServeConfig(model="movies"), state=state)


def test_async_calls_answer_as_the_sync_ones(model: RecommenderModel, kind: str) -> None:
    when = datetime.fromtimestamp(time.time() - 60, UTC)
    sync, asynced = online(model, state_for(kind)), online(model, state_for(kind))

    async def drive() -> list[list[dict[str, object]]]:
        for user, item, event_type in EVENTS:
            await asynced.arecord(user, item, event_type, when)
        answers = [
            await asynced.arecommend(user, 5, strategy=strategy)  # type: ignore[arg-type]
            for user, strategy in ASKS
        ]
        answers.append(await asynced.arecommend("alice", 5, exclude=["i10", "i02"]))
        assert await asynced.arecommend("alice", 0) == []
        await asynced.aclose()
        return answers

    try:
        for user, item, event_type in EVENTS:
            sync.record(user, item, event_type, when)
        expected = [
            sync.recommend(user, 5, strategy=strategy)  # type: ignore[arg-type]
            for user, strategy in ASKS
        ]
        expected.append(sync.recommend("alice", 5, exclude=["i10", "i02"]))
        answers = asyncio.run(drive())
    finally:
        for rec in (sync, asynced):
            rec.state.clear()
            rec.close()
    assert [[(r["item"], r["reason"]) for r in a] for a in answers] == [
        [(r["item"], r["reason"]) for r in e] for e in expected
    ]
    assert [[r["score"] for r in a] for a in answers] == [
        [pytest.approx(r["score"], abs=1e-6) for r in e] for e in expected
    ]
    assert answers[0][0]["item"] == "i10"  # the live session moved it to the top
    assert answers[1][0]["item"] == "brand-new"  # a new item, from live co-visitation
    assert not {"i06", "i07", "i10", "i02"} & {r["item"] for r in answers[-1]}


def test_async_errors_are_the_sync_ones(model: RecommenderModel, kind: str) -> None:
    rec = online(model, state_for(kind))

    async def drive() -> None:
        with pytest.raises(ServeError, match="unknown event type 'like'"):
            await rec.arecord("alice", "i02", "like", None)
        with pytest.raises(ServeError, match="unknown strategy 'best'"):
            await rec.arecommend("alice", 3, strategy="best")  # type: ignore[arg-type]
        await rec.aclose()

    try:
        asyncio.run(drive())
    finally:
        rec.state.clear()
        rec.close()


@pytest.mark.services
def test_each_event_loop_gets_its_own_redis_client(model: RecommenderModel) -> None:
    rec = online(model, state_for(service_url("redis")))

    async def record_then_close() -> None:
        await rec.arecord("alice", "i06", "view", None)
        await rec.aclose()

    async def recommend_then_close() -> list[dict[str, object]]:
        try:
            return await rec.arecommend("alice", 3)
        finally:
            await rec.aclose()

    try:
        asyncio.run(record_then_close())
        recs = asyncio.run(recommend_then_close())  # a new loop: a new client
        assert recs[0]["item"] == "i10"
        assert [e.item for e in rec.state.snapshot("alice").history] == ["i06"]
    finally:
        rec.state.clear()
        rec.close()
    gc.collect()  # an unclosed connection would warn here (warnings are errors)


@pytest.mark.services
def test_close_from_another_thread_closes_the_async_connections(
    model: RecommenderModel,
) -> None:
    """As the server does at shutdown: its loop still runs, close() runs in a worker thread."""
    rec = online(model, state_for(service_url("redis")))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(rec.arecord("bob", "i02", "view", None), loop).result(5)
        recs = asyncio.run_coroutine_threadsafe(rec.arecommend("bob", 2), loop).result(5)
        assert len(recs) == 2
        rec.state.clear()
        rec.close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    gc.collect()  # an unclosed connection would warn here (warnings are errors)
