"""Permutation importance on held-out data: how much the score drops when a column is shuffled.

Measure it on rows the model never trained on (a holdout or test set): on training rows
it rewards features the model merely memorised. ``scoring`` is a loopline metric name
(``roc_auc``, ``pr_auc``, ``rmse`` ...) or a scikit-learn scorer name; prefer threshold-free
metrics, since label scorers use the estimator's ``predict`` (threshold 0.5), not the
shipped threshold. Losses are negated by scikit-learn, so a larger mean always means a
more important feature. Runs with ``n_jobs=1`` (one thread per model on shared machines).

>>> import numpy as np
>>> from sklearn.linear_model import LinearRegression
>>> X = np.random.default_rng(0).normal(size=(80, 3))
>>> y = 3 * X[:, 0] + 0.1 * X[:, 2]
>>> model = LinearRegression().fit(X, y)
>>> top = permutation_importances(model, X, y, scoring="rmse", seed=0)[0]
>>> top.feature, top.mean > 0
('x0', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.exceptions import NotFittedError
from sklearn.inspection import permutation_importance
from sklearn.utils.validation import check_is_fitted

from loopline.errors import EvaluationError
from loopline.evaluate.metrics import SKLEARN_SCORING


@dataclass(frozen=True)
class FeatureImportance:
    """Mean and std of the score drop over ``n_repeats`` shuffles of one feature."""

    feature: str
    mean: float
    std: float


def permutation_importances(
    fitted_estimator: Any,
    X_holdout: Any,
    y_holdout: ArrayLike,
    *,
    scoring: str,
    n_repeats: int = 5,
    seed: int,
    feature_names: Sequence[str] | None = None,
) -> list[FeatureImportance]:
    """Importances of the input columns of ``X_holdout``, most important first.

    Names come from ``feature_names``, else DataFrame columns, else ``x0, x1, ...``.
    """
    try:
        check_is_fitted(fitted_estimator)
    except NotFittedError as exc:
        raise EvaluationError(
            f"{type(fitted_estimator).__name__} is not fitted",
            hint="fit the model on the training rows first",
        ) from exc
    if n_repeats < 1:
        raise EvaluationError("n_repeats must be at least 1", n_repeats=n_repeats)
    names = _feature_names(X_holdout, feature_names)
    try:
        result = permutation_importance(
            fitted_estimator,
            X_holdout,
            np.asarray(y_holdout),
            scoring=SKLEARN_SCORING.get(scoring, scoring),
            n_repeats=n_repeats,
            random_state=seed,
            n_jobs=1,
        )
    except ValueError as exc:
        raise EvaluationError(
            f"permutation importance failed: {exc}",
            scoring=scoring,
            hint=f"use a loopline metric ({', '.join(sorted(SKLEARN_SCORING))}) matching the task",
        ) from exc
    rows = [
        FeatureImportance(name, float(mean), float(std))
        for name, mean, std in zip(
            names, result.importances_mean, result.importances_std, strict=True
        )
    ]
    return sorted(rows, key=lambda row: row.mean, reverse=True)


def _feature_names(X: Any, given: Sequence[str] | None) -> list[str]:
    width = X.shape[1]
    if given is not None:
        if len(given) != width:
            raise EvaluationError(
                f"{len(given)} feature names for {width} columns", hint="one name per column"
            )
        return [str(name) for name in given]
    columns = getattr(X, "columns", None)
    if columns is not None:
        return [str(name) for name in columns]
    return [f"x{i}" for i in range(width)]
