"""The recommender model: files, fold-in, blending, batch rankings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from loopline.config.serving import RecommenderJobConfig
from loopline.errors import LooplineError
from loopline.train.recommender.als import fit_als
from loopline.train.recommender.data import Interactions, temporal_split
from loopline.train.recommender.job import fit_recommender
from loopline.train.recommender.model import RecommenderModel, blend_scores, recency_weights
from loopline.train.recommender.strategies import recent_history, recommend, top_items


@pytest.fixture(scope="module")
def model(movielens: Interactions) -> RecommenderModel:
    """ALS (16 factors, 8 iterations) and co-visitation on MovieLens' earlier 80%."""
    spec = RecommenderJobConfig(table="movielens", factors=16, iterations=8, neighbours=20)
    return fit_recommender(temporal_split(movielens, 0.2).train, spec)


def test_save_and_load_round_trip_exactly(model: RecommenderModel, tmp_path: Path) -> None:
    model.metadata["note"] = {"k": [1, 2]}
    model.save(tmp_path / "m")

    loaded = RecommenderModel.load(tmp_path / "m")

    assert loaded.users.dtype == object
    assert loaded.items.dtype == object
    assert loaded.users.tolist() == model.users.tolist()
    assert loaded.items.tolist() == model.items.tolist()
    for name in ("user_factors", "item_factors", "neighbours", "neighbour_scores", "popularity"):
        mine, theirs = getattr(model, name), getattr(loaded, name)
        assert theirs.dtype == mine.dtype
        assert np.array_equal(theirs, mine), name
    assert (loaded.seen != model.seen).nnz == 0
    assert loaded.seen.dtype == model.seen.dtype
    assert (loaded.regularization, loaded.alpha) == (model.regularization, model.alpha)
    assert loaded.metadata == model.metadata
    assert loaded.user_index(str(model.users[5])) == 5
    assert loaded.item_index("no such movie") is None


def test_loading_a_folder_without_a_model_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(LooplineError, match="cannot read the recommender model"):
        RecommenderModel.load(tmp_path)


def test_inconsistent_arrays_are_rejected() -> None:
    good = RecommenderModel.example()

    with pytest.raises(LooplineError, match="popularity"):
        RecommenderModel(
            users=good.users,
            items=good.items,
            user_factors=good.user_factors,
            item_factors=good.item_factors,
            neighbours=good.neighbours,
            neighbour_scores=good.neighbour_scores,
            popularity=good.popularity[:2],
            seen=good.seen,
            regularization=0.1,
        )


def test_fold_in_solves_the_same_least_squares_as_implicit() -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    confidence = sp.random(40, 30, density=0.2, random_state=3, format="csr", dtype=np.float32)
    confidence.data = 1 + 2 * confidence.data
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=6, regularization=0.1, alpha=1.0, iterations=5, num_threads=1, random_state=0
        )
        als.fit(confidence, show_progress=False)
        expected = als.recalculate_user(7, confidence[7])
    model = RecommenderModel.example()
    model = RecommenderModel(
        users=np.array([str(i) for i in range(40)], dtype=object),
        items=np.array([str(i) for i in range(30)], dtype=object),
        user_factors=als.user_factors,
        item_factors=als.item_factors,
        neighbours=np.full((30, 1), -1, dtype=np.int32),
        neighbour_scores=np.zeros((30, 1), dtype=np.float32),
        popularity=np.zeros(30, dtype=np.float32),
        seen=confidence,
        regularization=0.1,
        alpha=2.0,
    )
    row = confidence[7]

    vector = model.fold_in(row.indices, row.data, confidences=True)
    from_weights = model.fold_in(row.indices, (row.data - 1) / 2.0)

    assert np.allclose(vector, expected, atol=1e-4)
    assert np.allclose(from_weights, vector, atol=1e-5)


def test_fold_in_of_a_training_history_ranks_like_the_learned_factors(
    model: RecommenderModel,
) -> None:
    overlaps = []
    for user in range(0, len(model.users), 25):
        items = model.seen_items(user)
        row = model.seen[user]
        folded = model.fold_in(items, row.data, confidences=True)
        exclude = sp.csr_matrix(row)
        ours = top_items(model.scores(folded)[None, :], exclude, 10)[0]
        learned = top_items(model.scores(model.user_factors[user])[None, :], exclude, 10)[0]
        overlaps.append(len(set(ours) & set(learned)) / 10)

    assert np.mean(overlaps) >= 0.8


def test_fold_in_adds_up_repeats_and_handles_an_empty_history(model: RecommenderModel) -> None:
    once = model.fold_in(np.array([3]), np.array([2.0]))
    twice = model.fold_in(np.array([3, 3, -1]), np.array([1.0, 1.0, 9.0]))

    assert np.allclose(once, twice, atol=1e-6)
    assert not model.fold_in(np.array([], dtype=np.int64), np.array([])).any()


def test_als_is_reproducible_with_a_seed() -> None:
    confidence = sp.random(30, 20, density=0.3, random_state=1, format="csr", dtype=np.float32)
    confidence.data += 1

    first = fit_als(confidence, factors=4, regularization=0.1, iterations=3, seed=5)
    second = fit_als(confidence, factors=4, regularization=0.1, iterations=3, seed=5)

    assert np.array_equal(first[1], second[1])


def test_blend_scales_each_part_before_mixing() -> None:
    als = np.array([[4.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    covisit = np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 0.0]])

    mixed = blend_scores(als, covisit, 0.25)

    assert mixed.tolist() == [[0.75, 0.5, 0.25], [0.0, 0.25, 0.0]]
    assert blend_scores(als[0], covisit[0], 0.0).tolist() == [1.0, 0.5, 0.0]
    assert recency_weights(2, 0.9).tolist() == [0.9, 1.0]


def test_recommendations_skip_seen_items_and_pad(model: RecommenderModel) -> None:
    users = np.arange(20)
    for strategy in ("popular", "als", "covisit", "blend"):
        ranked = recommend(model, users, strategy, k=10)  # type: ignore[arg-type]
        assert ranked.shape == (20, 10)
        for user, row in zip(users, ranked, strict=True):
            assert not set(row.tolist()) & set(model.seen_items(int(user)).tolist()), strategy
            assert len(set(row.tolist())) == 10
    # a catalogue smaller than k: the rest is -1
    tiny = RecommenderModel.example()
    assert recommend(tiny, np.array([0]), "als", k=5).tolist() == [[3, 2, -1, -1]]


def test_recent_history_weighs_the_latest_items_most() -> None:
    history = recent_history(
        np.array([1, 0, 1, 1, 0]), np.array([0, 1, 2, 3, 2]), (2, 4), recent=2, decay=0.5
    )

    assert history.toarray().tolist() == [[0.0, 0.5, 1.0, 0.0], [0.0, 0.0, 0.5, 1.0]]
