"""OnlineRecommender: live events change the very next recommendation; cold start; filters."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from tests.serve.recommend.recommender_project import ITEMS, synthetic_model

import loopline.serve.recommend.ranking as ranking_module
from loopline.config.serving import RecommenderServeConfig
from loopline.errors import ServeError
from loopline.serve.recommend.online import OnlineRecommender
from loopline.serve.recommend.ranking import top_indices
from loopline.train.recommender import RecommenderModel


def online(model: RecommenderModel, **options: object) -> OnlineRecommender:
    return OnlineRecommender(model, RecommenderServeConfig(model="movies", **options))


def items(recs: list[dict[str, object]]) -> list[object]:
    return [r["item"] for r in recs]


def rank_of(rec: OnlineRecommender, user: str, item: str, strategy: str = "blend") -> int:
    ranked = items(rec.recommend(user, len(ITEMS), strategy=strategy))  # type: ignore[arg-type]
    return ranked.index(item) if item in ranked else len(ITEMS)


def test_known_user_gets_als_order_without_seen_items(model: RecommenderModel) -> None:
    recs = online(model).recommend("alice", 3, strategy="als")
    assert items(recs) == ["i02", "i03", "i04"]  # i00, i01 seen in training
    assert [r["reason"] for r in recs] == ["als"] * 3
    assert recs[0]["score"] > recs[1]["score"] > recs[2]["score"]


def test_views_of_items_covisited_with_x_raise_x_at_once(model: RecommenderModel) -> None:
    rec = online(model)
    before = rank_of(rec, "alice", "i10")
    rec.record("alice", "i06", "view", None)
    rec.record("alice", "i07", "click", None)
    after = rec.recommend("alice", 3)
    assert before >= 3
    assert after[0]["item"] == "i10"
    assert after[0]["reason"] == "covisit"


def test_live_covisitation_recommends_a_new_item(model: RecommenderModel) -> None:
    rec = online(model)
    for user in ("v1", "v2", "v3"):
        rec.record(user, "i03", "view", None)
        rec.record(user, "brand-new", "purchase", None)  # unknown to the model
    rec.record("dave", "i03", "view", None)  # a new user, one event
    recs = rec.recommend("dave", 3)
    assert (recs[0]["item"], recs[0]["reason"]) == ("brand-new", "covisit")
    assert "i03" not in items(recs)
    assert items(rec.recommend("dave", 3, strategy="covisit"))[0] == "brand-new"


def test_unknown_user_without_events_gets_popular_then_trending(model: RecommenderModel) -> None:
    rec = online(model)
    for strategy in ("blend", "als", "covisit", "popular"):
        recs = rec.recommend("stranger", 3, strategy=strategy)  # type: ignore[arg-type]
        assert items(recs) == ["i00", "i01", "i02"]
        assert {r["reason"] for r in recs} == {"popular"}
    for n in range(3):
        rec.record(f"fan{n}", "i05", "purchase", None)  # trending now
    recs = rec.recommend("stranger", 2)
    assert items(recs) == ["i05", "i00"]
    assert recs[0]["reason"] == "trending"


def test_a_new_users_events_fold_into_als(model: RecommenderModel) -> None:
    rec = online(model)
    rec.record("erin", "i11", "purchase", None)
    rec.record("erin", "i10", "purchase", None)
    assert items(rec.recommend("erin", 2, strategy="als")) == ["i09", "i08"]


def test_seen_history_and_excluded_items_are_never_returned(model: RecommenderModel) -> None:
    rec = online(model)
    rec.record("alice", "i02", "view", None)
    for strategy in ("blend", "als", "covisit", "popular"):
        recs = rec.recommend("alice", 100, exclude=["i03", "nope"], strategy=strategy)  # type: ignore[arg-type]
        returned = items(recs)
        assert not {"i00", "i01", "i02", "i03"} & set(returned)
        assert sorted(returned) == sorted(set(ITEMS) - {"i00", "i01", "i02", "i03"})


def test_never_more_than_k(model: RecommenderModel) -> None:
    rec = online(model)
    rec.record("v1", "i03", "view", None)
    rec.record("v1", "new-a", "view", None)
    rec.record("v2", "i03", "view", None)
    assert len(rec.recommend("v2", 1)) == 1
    assert len(rec.recommend("v2", 5)) == 5
    assert rec.recommend("v2", 0) == []
    everything = rec.recommend("v2", 1000)
    assert len(everything) == len(ITEMS) - 1 + 1  # i03 seen; new-a added


def test_ties_follow_the_catalogue_order() -> None:
    model = synthetic_model()
    model.popularity[:] = 1.0
    recs = online(model).recommend("stranger", 4)
    assert items(recs) == ["i00", "i01", "i02", "i03"]
    assert len({r["score"] for r in recs}) == 1


def test_session_weight_zero_ignores_the_session(model: RecommenderModel) -> None:
    rec = online(model, session_weight=0.0)
    rec.record("alice", "i06", "view", None)
    rec.record("alice", "i07", "view", None)
    assert "i10" not in items(rec.recommend("alice", 3))


def test_unknown_event_type_is_refused(model: RecommenderModel) -> None:
    with pytest.raises(ServeError, match="unknown event type 'like'"):
        online(model).record("alice", "i02", "like", None)


def test_timestamps_naive_and_aware_are_accepted(model: RecommenderModel) -> None:
    rec = online(model)
    rec.record("alice", "i02", "view", datetime(2026, 11, 27, 12, 0))
    rec.record("alice", "i03", "view", datetime.fromisoformat("2026-11-27T12:00:01+00:00"))
    history = rec.state.snapshot("alice").history
    assert [e.timestamp for e in history] == [1795780801.0, 1795780800.0]


def test_swap_keeps_the_live_state(model: RecommenderModel) -> None:
    rec = online(model)
    rec.record("alice", "i06", "view", None)
    newer = synthetic_model()
    newer.user_factors = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    rec.swap(None, newer)  # type: ignore[arg-type]
    assert rec.model is newer
    assert [e.item for e in rec.state.snapshot("alice").history] == ["i06"]
    assert "i06" not in items(rec.recommend("alice", 20))


def test_non_positive_event_weights_are_refused(model: RecommenderModel) -> None:
    with pytest.raises(ServeError, match="event weights must be > 0"):
        online(model, event_weights={"view": 1.0, "skip": 0.0})


@pytest.mark.parametrize("size", [0, 1, 5, 64, 65, 700, 7745])
def test_top_indices_are_the_k_best_finite_scores_ties_to_the_smaller_index(size: int) -> None:
    rng = np.random.default_rng(size)
    for trial in range(30):
        if trial % 3 == 0:
            score = rng.integers(0, 4, size).astype(np.float64)  # many ties
        else:
            score = rng.normal(size=size)
        score[rng.random(size) < (0.1 if trial % 2 else 0.97)] = -np.inf
        if trial % 5 == 4 and size:
            score[rng.integers(0, size)] = np.nan
        finite = [j for j in range(size) if np.isfinite(score[j])]
        expected = sorted(finite, key=lambda j: (-score[j], j))
        for k in (1, 3, 10, 50, size, size + 5):
            assert top_indices(score, k).tolist() == expected[:k], (trial, k)


def test_cached_scores_answer_as_fresh_ones(
    model: RecommenderModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = online(model)
    monkeypatch.setattr(ranking_module, "CACHE_BYTES", 0)
    monkeypatch.setattr(ranking_module, "FOLD_IN_CACHE", 0)
    fresh = online(model)
    steps: list[tuple[str, ...]] = [
        ("ask", "alice"),
        ("ask", "bob"),
        ("event", "alice", "i06", "view"),
        ("ask", "alice"),  # new history: not the cached answer of the first ask
        ("ask", "alice"),  # same history: from the caches
        ("event", "bob", "i03", "purchase"),
        ("event", "erin", "i11", "view"),
        ("ask", "bob"),
        ("ask", "erin"),
        ("event", "erin", "i10", "view"),
        ("ask", "erin"),
        ("ask", "alice"),
        ("event", "alice", "i06", "click"),  # the same item again: other weights
        ("ask", "alice"),
    ]
    for step in steps:
        if step[0] == "event":
            for rec in (cached, fresh):
                rec.record(step[1], step[2], step[3], datetime(2026, 11, 27, 12, 0))
            continue
        for strategy in ("blend", "als", "covisit"):
            got = cached.recommend(step[1], 5, strategy=strategy)  # type: ignore[arg-type]
            assert got == fresh.recommend(step[1], 5, strategy=strategy), (step, strategy)  # type: ignore[arg-type]
