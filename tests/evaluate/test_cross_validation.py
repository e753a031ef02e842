from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from loopline.errors import EvaluationError
from loopline.evaluate.cross_validation import CVResult, cross_validate
from loopline.evaluate.splits import cv_splitter


class RowRecordingScaler(StandardScaler):
    """A StandardScaler that remembers the rows it was fitted on (column 0 holds a row id)."""

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RowRecordingScaler:
        self.fitted_rows_ = set(np.asarray(X)[:, 0].astype(int).tolist())
        return super().fit(X, y, sample_weight)


def _with_row_ids(X: np.ndarray) -> np.ndarray:
    return np.column_stack([np.arange(len(X)), X])


def _logistic() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression())


def _leaked_rows(pipelines: list[Pipeline], result: CVResult) -> list[set[int]]:
    return [
        pipe.named_steps["rowrecordingscaler"].fitted_rows_ & set(fold.test_index.tolist())
        for pipe, fold in zip(pipelines, result.folds, strict=True)
    ]


def test_preprocessing_never_sees_test_fold_rows(binary_data) -> None:
    X, y = binary_data
    pipelines: list[Pipeline] = []

    def factory() -> Pipeline:
        pipe = make_pipeline(RowRecordingScaler(), LogisticRegression())
        pipelines.append(pipe)
        return pipe

    cv = cv_splitter("stratified", task="binary", folds=5, seed=0)
    result = cross_validate(factory, _with_row_ids(X), y, cv, task="binary")
    assert len(pipelines) == 5
    assert _leaked_rows(pipelines, result) == [set()] * 5
    for pipe, fold in zip(pipelines, result.folds, strict=True):
        fitted = pipe.named_steps["rowrecordingscaler"].fitted_rows_
        assert fitted == set(range(len(y))) - set(fold.test_index.tolist())


def test_the_leak_check_catches_a_scaler_fitted_on_all_rows(binary_data) -> None:
    X, y = binary_data
    Xi = _with_row_ids(X)
    pipelines: list[Pipeline] = []

    class LeakyPipeline(Pipeline):
        def fit(self, X: Any, y: Any = None, **params: Any) -> LeakyPipeline:
            super().fit(X, y, **params)
            self.named_steps["rowrecordingscaler"].fit(Xi)  # the classic leak
            return self

    def factory() -> Pipeline:
        pipe = LeakyPipeline(
            [("rowrecordingscaler", RowRecordingScaler()), ("model", LogisticRegression())]
        )
        pipelines.append(pipe)
        return pipe

    cv = cv_splitter("stratified", task="binary", folds=3, seed=0)
    result = cross_validate(factory, Xi, y, cv, task="binary")
    assert all(_leaked_rows(pipelines, result))


def test_stratified_folds_keep_the_class_ratio(binary_data) -> None:
    X, y = binary_data
    cv = cv_splitter("stratified", task="binary", folds=5, seed=1)
    result = cross_validate(_logistic, X, y, cv, task="binary")
    expected_positives = y.sum() / 5
    for fold in result.folds:
        assert abs(y[fold.test_index].sum() - expected_positives) <= 1


def test_fold_metrics_and_oof_match_scikit_learn(binary_data) -> None:
    X, y = binary_data
    cv = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    result = cross_validate(_logistic, X, y, cv, task="binary")
    reference = cross_val_score(_logistic(), X, y, cv=cv, scoring="roc_auc")
    assert result.fold_scores("roc_auc") == pytest.approx(reference)
    assert result.summary()["roc_auc"] == pytest.approx((reference.mean(), reference.std()))
    assert result.oof.shape == (len(y),)
    assert result.covered.all()
    for fold in result.folds:
        test = fold.test_index
        assert roc_auc_score(y[test], result.oof[test]) == pytest.approx(fold.metrics["roc_auc"])
        assert fold.n_train + fold.n_test == len(y)


def test_same_seed_same_metrics(binary_data) -> None:
    X, y = binary_data

    def run(seed: int) -> dict[str, tuple[float, float]]:
        cv = cv_splitter("auto", task="binary", folds=3, seed=seed)
        return cross_validate(_logistic, X, y, cv, task="binary").summary()

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_regression_oof_values_and_table_rows() -> None:
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:200], y[:200]
    cv = KFold(n_splits=3, shuffle=True, random_state=0)
    result = cross_validate(lambda: Ridge(alpha=1.0), X, y, cv, task="regression")
    reference = -cross_val_score(
        Ridge(alpha=1.0), X, y, cv=cv, scoring="neg_root_mean_squared_error"
    )
    assert result.fold_scores("rmse") == pytest.approx(reference)
    rows = result.table()
    assert [row["fold"] for row in rows] == [0, 1, 2, "mean", "std"]
    assert rows[-2]["rmse"] == pytest.approx(reference.mean())
    assert rows[0]["n_train"] + rows[0]["n_test"] == 200


class _OneSplit:
    """A single hand-made split: train on ``train``, test on ``test``."""

    def __init__(self, train: np.ndarray, test: np.ndarray) -> None:
        self.train, self.test = train, test

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        yield self.train, self.test

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return 1


def test_multiclass_oof_has_a_zero_column_for_a_class_the_fold_never_saw() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2] * 20)
    X = rng.normal(size=(60, 2)) + y[:, None]
    rows = np.arange(60)
    splitter = _OneSplit(rows[y != 2], rows)
    result = cross_validate(LogisticRegression, X, y, splitter, task="multiclass")
    assert result.oof.shape == (60, 3)
    assert (result.oof[:, 2] == 0).all()
    assert result.oof[:, :2].sum(axis=1) == pytest.approx(np.ones(60))
    assert list(result.labels) == [0, 1, 2]


def test_a_test_fold_missing_a_class_is_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.array([0, 1] * 29 + [2, 2])  # class 2 only in the last fold
    with pytest.raises(EvaluationError, match="every class") as info:
        cross_validate(LogisticRegression, X, y, KFold(n_splits=3), task="multiclass")
    assert info.value.fields["missing_classes"] == [2]


def test_repeated_cv_averages_oof_over_repeats(binary_data) -> None:
    X, y = binary_data
    cv = cv_splitter("repeated", task="binary", folds=3, repeats=2, seed=0)
    result = cross_validate(_logistic, X, y, cv, task="binary")
    assert len(result.folds) == 6
    assert result.covered.all()
    assert np.isfinite(result.oof).all()


def test_timeseries_oof_marks_untested_rows(binary_data) -> None:
    X, y = binary_data
    cv = cv_splitter("timeseries", task="binary", folds=3, seed=0)
    result = cross_validate(_logistic, X, y, cv, task="binary")
    assert not result.covered[:75].any()
    assert result.covered[75:].all()
    assert np.isnan(result.oof[:75]).all()


@pytest.mark.slow
def test_parallel_folds_give_the_same_result(binary_data) -> None:
    X, y = binary_data
    cv = cv_splitter("stratified", task="binary", folds=2, seed=0)
    # Worker processes need a factory they can import or unpickle: clone of a template.
    factory = partial(clone, _logistic())
    sequential = cross_validate(factory, X, y, cv, task="binary")
    parallel = cross_validate(factory, X, y, cv, task="binary", n_jobs=2)
    assert parallel.fold_scores("roc_auc") == pytest.approx(sequential.fold_scores("roc_auc"))
    assert np.allclose(parallel.oof, sequential.oof)


def test_group_splitter_without_groups_is_a_clear_error(binary_data) -> None:
    X, y = binary_data
    with pytest.raises(EvaluationError, match="cannot split") as info:
        cross_validate(_logistic, X, y, GroupKFold(n_splits=3), task="binary")
    assert info.value.fields["splitter"] == "GroupKFold"


def test_misaligned_x_and_y_is_a_clear_error(binary_data) -> None:
    X, y = binary_data
    with pytest.raises(EvaluationError, match="X has 300 rows but y has 299"):
        cross_validate(_logistic, X, y[:-1], KFold(3), task="binary")


def test_unknown_metric_names_the_available_ones(binary_data) -> None:
    X, y = binary_data
    result = cross_validate(_logistic, X, y, KFold(3), task="binary")
    with pytest.raises(EvaluationError, match="'rmse' was not computed") as info:
        result.fold_scores("rmse")
    assert "roc_auc" in (info.value.hint or "")
