from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    TimeSeriesSplit,
)

from loopline.errors import EvaluationError
from loopline.evaluate.splits import cv_splitter, holdout_split

Y = np.array([0] * 70 + [1] * 30)


def _disjoint_cover(train: np.ndarray, test: np.ndarray, n: int) -> bool:
    return not set(train) & set(test) and sorted([*train, *test]) == list(range(n))


def test_random_holdout_is_seeded_and_covers_every_row_once() -> None:
    train, test = holdout_split(Y, test_size=0.2, strategy="random", seed=1)
    again = holdout_split(Y, test_size=0.2, strategy="random", seed=1)
    other = holdout_split(Y, test_size=0.2, strategy="random", seed=2)
    assert _disjoint_cover(train, test, 100)
    assert len(test) == 20
    assert np.array_equal(test, again[1])
    assert not np.array_equal(test, other[1])


def test_stratified_holdout_keeps_the_class_ratio() -> None:
    train, test = holdout_split(Y, test_size=0.3, strategy="stratified", seed=0)
    assert Y[test].mean() == pytest.approx(0.3)
    assert Y[train].mean() == pytest.approx(0.3)


def test_auto_holdout_is_stratified_for_classification() -> None:
    auto = holdout_split(Y, test_size=0.3, strategy="auto", seed=0, task="binary")
    stratified = holdout_split(Y, test_size=0.3, strategy="stratified", seed=0)
    assert np.array_equal(auto[1], stratified[1])


def test_group_holdout_never_splits_a_group() -> None:
    groups = np.arange(100) // 5
    train, test = holdout_split(Y, test_size=0.25, strategy="group", groups=groups, seed=0)
    assert _disjoint_cover(train, test, 100)
    assert not set(groups[train]) & set(groups[test])


def test_time_holdout_takes_the_latest_rows_by_order() -> None:
    order = np.random.default_rng(0).permutation(100)
    train, test = holdout_split(Y, test_size=0.2, strategy="time", order=order, seed=0)
    assert sorted(order[test]) == list(range(80, 100))
    assert order[train].max() < order[test].min()


def test_time_holdout_keeps_tied_timestamps_on_the_test_side() -> None:
    order = np.array([1, 2, 3, 4, 4, 4, 5, 6, 7, 8])
    train, test = holdout_split(np.zeros(10), test_size=0.5, strategy="time", order=order, seed=0)
    assert order[train].tolist() == [1, 2, 3]
    assert order[test].min() == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "group"}, "needs groups"),
        ({"strategy": "time"}, "needs order"),
        ({"strategy": "auto"}, "needs the task"),
        ({"strategy": "random", "test_size": 1.5}, "share between 0 and 1"),
    ],
)
def test_bad_holdout_requests_are_clear_errors(kwargs, message) -> None:
    kwargs = {"test_size": 0.2, "seed": 0, **kwargs}
    with pytest.raises(EvaluationError, match=message):
        holdout_split(Y, **kwargs)


def test_stratified_holdout_with_a_singleton_class_names_the_counts() -> None:
    with pytest.raises(EvaluationError, match="class 2 has 1") as info:
        holdout_split([0, 1] * 10 + [2], test_size=0.2, strategy="stratified", seed=0)
    assert info.value.fields["class_counts"] == {"0": 10, "1": 10, "2": 1}


@pytest.mark.parametrize(
    ("kind", "task", "repeats", "expected"),
    [
        ("auto", "binary", 1, StratifiedKFold),
        ("auto", "regression", 1, KFold),
        ("kfold", "binary", 1, KFold),
        ("stratified", "multiclass", 1, StratifiedKFold),
        ("repeated", "binary", 2, RepeatedStratifiedKFold),
        ("repeated", "regression", 2, RepeatedKFold),
        ("auto", "binary", 3, RepeatedStratifiedKFold),
        ("group", "binary", 1, StratifiedGroupKFold),
        ("group", "regression", 1, GroupKFold),
        ("timeseries", "regression", 1, TimeSeriesSplit),
    ],
)
def test_every_cv_kind_builds_its_splitter(kind, task, repeats, expected) -> None:
    groups = np.arange(100) // 4 if kind == "group" else None
    splitter = cv_splitter(kind, task=task, folds=4, repeats=repeats, seed=0, groups=groups)
    assert type(splitter) is expected
    folds = list(splitter.split(np.zeros((100, 1)), Y, groups))
    assert len(folds) == 4 * repeats == splitter.get_n_splits()


def test_group_folds_never_share_a_group() -> None:
    groups = np.arange(100) // 4
    splitter = cv_splitter("group", task="binary", folds=5, seed=0, groups=groups)
    for train, test in splitter.split(np.zeros((100, 1)), Y, groups):
        assert not set(groups[train]) & set(groups[test])


def test_cv_splitter_is_reproducible_under_a_seed() -> None:
    def tests(seed: int) -> list[list[int]]:
        cv = cv_splitter("auto", task="binary", folds=5, seed=seed)
        return [t.tolist() for _, t in cv.split(np.zeros((100, 1)), Y)]

    assert tests(4) == tests(4)
    assert tests(4) != tests(5)


def test_more_folds_than_the_smallest_class_is_a_clear_error() -> None:
    y = np.array([0] * 20 + [1] * 3)
    with pytest.raises(EvaluationError, match="class 1 has 3") as info:
        cv_splitter("stratified", task="binary", folds=5, seed=0, y=y)
    assert info.value.fields["class_counts"] == {"0": 20, "1": 3}
    assert "at most 3 folds" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("kind", "task", "kwargs", "message"),
    [
        ("group", "binary", {}, "needs group labels"),
        ("group", "binary", {"groups": [1, 1, 2]}, "at least 5 groups"),
        ("stratified", "regression", {}, "regression"),
        ("timeseries", "regression", {"repeats": 2}, "cannot be repeated"),
        ("loo", "binary", {}, "unknown cv kind"),
    ],
)
def test_bad_cv_requests_are_clear_errors(kind, task, kwargs, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        cv_splitter(kind, task=task, folds=5, seed=0, **kwargs)
