from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loopline.errors import EvaluationError
from loopline.evaluate.importance import permutation_importances


def _regression_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(150, 3)), columns=["noise", "strong", "weak"])
    y = 4 * X["strong"].to_numpy() + 1 * X["weak"].to_numpy()
    return X, y


def test_importances_are_sorted_and_named_by_column() -> None:
    X, y = _regression_frame()
    model = LinearRegression().fit(X[:100], y[:100])
    rows = permutation_importances(model, X[100:], y[100:], scoring="rmse", seed=0)
    assert [row.feature for row in rows] == ["strong", "weak", "noise"]
    assert rows[0].mean > rows[1].mean > 0
    assert rows[2].mean == pytest.approx(0.0, abs=1e-9)


def test_importances_equal_scikit_learn_with_the_translated_scorer() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X[:, :6], y, test_size=0.3, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, y_train)
    rows = permutation_importances(model, X_test, y_test, scoring="pr_auc", n_repeats=3, seed=1)
    reference = permutation_importance(
        model, X_test, y_test, scoring="average_precision", n_repeats=3, random_state=1, n_jobs=1
    )
    by_name = {row.feature: row.mean for row in rows}
    assert [by_name[f"x{i}"] for i in range(6)] == pytest.approx(reference.importances_mean)


def test_an_unfitted_model_is_a_clear_error() -> None:
    X, y = _regression_frame()
    with pytest.raises(EvaluationError, match="not fitted"):
        permutation_importances(RandomForestClassifier(), X, y, scoring="roc_auc", seed=0)


def test_an_unknown_scoring_is_a_clear_error() -> None:
    X, y = _regression_frame()
    model = LinearRegression().fit(X, y)
    with pytest.raises(EvaluationError, match="permutation importance failed") as info:
        permutation_importances(model, X, y, scoring="rsme", seed=0)
    assert "rmse" in (info.value.hint or "")


def test_feature_names_must_match_the_columns() -> None:
    X, y = _regression_frame()
    model = LinearRegression().fit(X, y)
    with pytest.raises(EvaluationError, match="2 feature names for 3 columns"):
        permutation_importances(model, X, y, scoring="rmse", seed=0, feature_names=["a", "b"])
