"""Interactions and the temporal split: nothing from the future reaches training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config import config_from_dict
from loopline.config.serving import RecommenderJobConfig
from loopline.datasets import load_frame, load_into_warehouse
from loopline.errors import TrainError
from loopline.train.recommender.data import Interactions, read_interactions, temporal_split


def test_interactions_are_indexed_and_sorted_by_time() -> None:
    data = Interactions.from_columns([7, 3, 7], ["x", "y", "x"], [30, 10, 20])

    assert data.users.tolist() == ["3", "7"]
    assert data.items.tolist() == ["x", "y"]
    assert data.time.tolist() == [10, 20, 30]
    assert data.user.tolist() == [0, 1, 1]
    assert data.matrix().toarray().tolist() == [[0.0, 1.0], [2.0, 0.0]]


def test_the_global_split_trains_only_on_interactions_before_the_cutoff(
    movielens: Interactions,
) -> None:
    split = temporal_split(movielens, 0.2)
    train = split.train

    assert split.n_test == 20_001
    assert len(train) == len(movielens) - split.n_test
    assert train.time.max() <= split.cutoff
    # every held-out interaction is at or after the cutoff, every training one at or before
    assert np.sort(movielens.time)[len(train)] == split.cutoff
    # the relevant items of a test user are held out and new to that user
    seen = train.matrix()
    for user, items in zip(split.test_users, split.relevant, strict=True):
        assert items.size > 0
        assert seen[user, items].nnz == 0
    # MovieLens users rate in bursts: few straddle one cutoff time
    assert 10 <= split.test_users.size <= 40
    assert split.dropped_cold > split.n_test // 2


def test_the_user_split_holds_out_each_users_latest_interactions(
    movielens: Interactions,
) -> None:
    split = temporal_split(movielens, 0.2, mode="user")
    train = split.train

    assert split.cutoff is None
    assert split.test_users.size == len(movielens.users)  # every user has >= 20 ratings
    train_times = pd.DataFrame({"user": train.users[train.user], "time": train.time})
    all_times = pd.DataFrame({"user": movielens.users[movielens.user], "time": movielens.time})
    for user, times in all_times.groupby("user")["time"]:
        ordered = np.sort(times.to_numpy())
        n_test = int(np.ceil(len(ordered) * 0.2))
        trained = train_times.loc[train_times["user"] == user, "time"].to_numpy()
        assert len(trained) == len(ordered) - n_test
        # nothing later than the user's first held-out interaction is trained on
        assert trained.max() <= ordered[len(ordered) - n_test]


def test_a_split_needs_both_sides() -> None:
    data = Interactions.from_columns(["u"], ["a"], [1])

    with pytest.raises(TrainError, match="cannot hold out"):
        temporal_split(data, 0.5)
    with pytest.raises(TrainError, match="test_fraction"):
        temporal_split(data, 1.0)


def test_reading_from_the_warehouse_keeps_positive_ratings(tmp_path: Path) -> None:
    config = config_from_dict({}, project_dir=tmp_path, env={})
    load_into_warehouse("movielens", config)
    job = RecommenderJobConfig(
        table="movielens", user="userId", item="movieId", rating="rating", min_rating=4.0
    )

    data, lineage = read_interactions(config, job)

    frame = load_frame("movielens")
    positives = frame[frame["rating"] >= 4.0]
    assert len(data) == len(positives) == lineage["interactions"]
    assert lineage["rows"] == 100_004
    assert lineage["source"] == "table:movielens"
    assert len(data.users) == positives["userId"].nunique()
    assert np.all(np.diff(data.time) >= 0)

    with pytest.raises(TrainError, match="not in the warehouse"):
        read_interactions(config, job.model_copy(update={"table": "nothing"}))
    with pytest.raises(TrainError, match="cannot read the interactions"):
        read_interactions(config, job.model_copy(update={"user": "user_id"}))
