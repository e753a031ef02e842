from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from loopline.errors import EvaluationError
from loopline.evaluate.comparison import compare_models, corrected_resampled_ttest
from loopline.evaluate.cross_validation import cross_validate
from loopline.evaluate.splits import cv_splitter


def test_ttest_matches_a_hand_computed_example() -> None:
    # d = [0.02, 0.02, -0.01, 0.04, 0.03]: mean 0.02, var (ddof=1) 0.00035;
    # corrected var = 0.00035 * (1/5 + 20/80) = 0.0001575 → t = 0.02 / 0.012550 = 1.59364,
    # two-sided p from t with 4 df = 0.18624.
    a = [0.80, 0.82, 0.78, 0.84, 0.81]
    b = [0.78, 0.80, 0.79, 0.80, 0.78]
    result = corrected_resampled_ttest(a, b, n_train=80, n_test=20)
    assert result.mean_diff == pytest.approx(0.02)
    assert result.t == pytest.approx(1.5936381, rel=1e-6)
    assert result.p_value == pytest.approx(0.1862398, rel=1e-5)
    assert result.df == 4


def test_the_correction_is_more_cautious_than_the_plain_paired_test() -> None:
    a = [0.80, 0.82, 0.78, 0.84, 0.81]
    b = [0.78, 0.80, 0.79, 0.80, 0.78]
    corrected = corrected_resampled_ttest(a, b, n_train=80, n_test=20)
    plain_t = 0.02 / math.sqrt(0.00035 / 5)
    assert corrected.t < plain_t


def test_identical_scores_give_no_difference() -> None:
    scores = [0.71, 0.74, 0.69, 0.73]
    result = corrected_resampled_ttest(scores, scores, n_train=300, n_test=100)
    assert (result.mean_diff, result.t, result.p_value) == (0.0, 0.0, 1.0)


def test_a_constant_non_zero_difference_is_certain() -> None:
    result = corrected_resampled_ttest([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], n_train=90, n_test=10)
    assert result.p_value == 0.0
    assert result.t == math.inf


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([0.1, 0.2], [0.1], {}, "paired"),
        ([0.1], [0.2], {}, "at least two folds"),
        ([0.1, np.nan], [0.2, 0.3], {}, "NaN"),
        ([0.1, 0.2], [0.2, 0.3], {"n_train": 0}, "positive"),
    ],
)
def test_bad_ttest_inputs_are_clear_errors(a, b, kwargs, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        corrected_resampled_ttest(a, b, **{"n_train": 80, "n_test": 20, **kwargs})


def test_compare_models_ranks_by_the_metric_against_the_best() -> None:
    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    cv = cv_splitter("stratified", task="binary", folds=5, seed=0)
    results = {
        "dummy": cross_validate(lambda: DummyClassifier(), X, y, cv, task="binary"),
        "logistic": cross_validate(LogisticRegression, X, y, cv, task="binary"),
    }
    rows = compare_models(results, "roc_auc")
    assert [row.model for row in rows] == ["logistic", "dummy"]
    assert rows[0].is_best
    assert rows[0].p_value == 1.0
    expected = corrected_resampled_ttest(
        results["dummy"].fold_scores("roc_auc"),
        results["logistic"].fold_scores("roc_auc"),
        n_train=160,
        n_test=40,
    )
    assert rows[1].diff == pytest.approx(expected.mean_diff)
    assert rows[1].diff < 0
    assert rows[1].p_value == pytest.approx(expected.p_value)
    assert rows[1].p_value < 0.01


def test_compare_models_puts_the_lowest_loss_first() -> None:
    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    cv = cv_splitter("stratified", task="binary", folds=4, seed=0)
    results = {
        "dummy": cross_validate(lambda: DummyClassifier(), X, y, cv, task="binary"),
        "logistic": cross_validate(LogisticRegression, X, y, cv, task="binary"),
    }
    assert compare_models(results, "log_loss")[0].model == "logistic"


def test_compare_models_refuses_different_folds() -> None:
    X, y = make_classification(n_samples=120, n_features=5, random_state=0)
    results = {
        name: cross_validate(
            LogisticRegression,
            X,
            y,
            StratifiedKFold(n_splits=3, shuffle=True, random_state=seed),
            task="binary",
        )
        for name, seed in [("a", 0), ("b", 1)]
    }
    with pytest.raises(EvaluationError, match="identical folds"):
        compare_models(results, "roc_auc")
