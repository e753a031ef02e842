"""The online recommender on a model trained on MovieLens (E's offline training, no registry)."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from loopline.config.serving import RecommenderJobConfig, RecommenderServeConfig
from loopline.datasets import load_frame
from loopline.serve.recommend.online import OnlineRecommender
from loopline.train.recommender import RecommenderModel
from loopline.train.recommender.data import Interactions, temporal_split
from loopline.train.recommender.job import fit_recommender

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> RecommenderModel:
    """ALS (32 factors) + co-visitation on the earlier 80% of the 100,004 ratings (~5 s)."""
    frame = load_frame("movielens")
    data = Interactions.from_columns(
        frame["userId"].to_numpy(), frame["movieId"].to_numpy(), frame["timestamp"].to_numpy()
    )
    spec = RecommenderJobConfig(table="movielens", factors=32, iterations=8, neighbours=50)
    with threadpool_limits(1):
        return fit_recommender(temporal_split(data, 0.2).train, spec)


@pytest.fixture
def rec(model: RecommenderModel) -> OnlineRecommender:
    return OnlineRecommender(model, RecommenderServeConfig(model="movies"))


def ids(recs: list[dict[str, object]]) -> list[object]:
    return [r["item"] for r in recs]


def test_training_users_never_get_what_they_rated(
    rec: OnlineRecommender, model: RecommenderModel
) -> None:
    for u in range(0, len(model.users), 60):
        user = str(model.users[u])
        seen = {str(model.items[i]) for i in model.seen_items(u)}
        for strategy in ("blend", "als", "covisit", "popular"):
            recs = rec.recommend(user, 10, strategy=strategy)  # type: ignore[arg-type]
            assert len(recs) == 10
            assert not seen & set(ids(recs))


def test_a_new_users_session_follows_the_co_visited_movies(
    rec: OnlineRecommender, model: RecommenderModel
) -> None:
    cold = ids(rec.recommend("newcomer", 10))
    assert cold == [str(model.items[i]) for i in np.argsort(-model.popularity, kind="stable")[:10]]
    session = ["260", "1196", "1210"]  # Star Wars IV, V, VI
    for movie in session:
        rec.record("newcomer", movie, "rating", None)
    recs = rec.recommend("newcomer", 10)
    assert ids(recs) != cold
    assert not set(session) & set(ids(recs))
    neighbours = {
        str(model.items[j])
        for i in (model.item_index(m) for m in session)
        if i is not None
        for j in model.neighbours[i]
        if j >= 0
    }
    assert len(neighbours & set(ids(recs))) >= 5  # most come from the session's neighbours


def test_a_known_users_list_moves_with_live_events(
    rec: OnlineRecommender, model: RecommenderModel
) -> None:
    user = str(model.users[0])
    before = ids(rec.recommend(user, 10))
    for movie in ["1", "3114", "2355"]:  # Toy Story, Toy Story 2, A Bug's Life
        rec.record(user, movie, "purchase", None)
    after = ids(rec.recommend(user, 10))
    assert after != before
    assert not {"1", "3114", "2355"} & set(after)
