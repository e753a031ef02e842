"""Per-feature SHAP contributions of tree models (TreeSHAP).

LightGBM (``predict(..., pred_contrib=True)``) and XGBoost (``pred_contribs=True``) compute
exact SHAP values of their own trees; scikit-learn's trees and forests (decision tree,
random forest, extra trees, (histogram) gradient boosting) go through the ``shap`` package's
``TreeExplainer`` on at most ``SKLEARN_SHAP_ROWS`` rows. :func:`tree_contributions` runs the
pipeline's preprocessing on a sample of rows, asks the fitted model for those values and returns the
mean absolute contribution of each *transformed* feature (``numeric__tenure``,
``categorical__contract_Month-to-month``), largest first. The values are in the model's raw
output units (log-odds for classifiers, target units for regressors); for a multiclass
model a feature's value is its mean over the classes. Other models (linear ones) give an empty list:
permutation importance covers every model.

>>> import numpy as np
>>> from lightgbm import LGBMRegressor
>>> from sklearn.pipeline import Pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> X = np.random.default_rng(0).normal(size=(200, 3))
>>> model = LGBMRegressor(n_estimators=20, verbose=-1, n_jobs=1)
>>> pipe = Pipeline([("preprocess", StandardScaler()), ("model", model)]).fit(X, 3 * X[:, 1])
>>> tree_contributions(pipe, X[:50])[0][0]
'x1'
"""

from __future__ import annotations

from typing import Any

import numpy as np

SHAP_ROWS = 1000
"""Explain at most this many rows (TreeSHAP costs rows × trees × leaves)."""
SKLEARN_SHAP_ROWS = 200
"""Fewer for scikit-learn forests, explained in Python by ``shap`` rather than natively."""
_SKLEARN_TREES = (
    "DecisionTree",
    "RandomForest",
    "ExtraTrees",
    "GradientBoosting",
    "HistGradientBoosting",
)


def tree_contributions(fitted_pipeline: Any, X_sample: Any) -> list[tuple[str, float]]:
    """``(feature, mean |contribution|)`` of each transformed feature, largest first.

    ``fitted_pipeline`` is a fitted pipeline whose first step is ``preprocess`` and whose
    last step is the model (what :func:`~loopline.train.features.build_pipeline` builds; a
    resampling step in between is skipped, as at prediction time). Empty for a model that
    is neither LightGBM nor XGBoost, or for a bare estimator.
    """
    steps = getattr(fitted_pipeline, "steps", None)
    if not steps or len(steps) < 2:
        return []
    model = steps[-1][1]
    kind = _kind(model)
    if kind is None:
        return []
    preprocess = steps[0][1]
    rows = X_sample.iloc[:SHAP_ROWS] if hasattr(X_sample, "iloc") else X_sample[:SHAP_ROWS]
    transformed = np.asarray(preprocess.transform(rows), dtype=np.float64)
    names = _names(preprocess, transformed.shape[1])
    if kind == "sklearn":
        per_class = _sklearn_shap(model, transformed[:SKLEARN_SHAP_ROWS])
        if per_class is None:
            return []
        means = np.abs(per_class).mean(axis=(0, 1))
        ranked = sorted(zip(names, means.tolist(), strict=True), key=lambda item: -item[1])
        return [(name, float(value)) for name, value in ranked]
    if kind == "lightgbm":
        contrib = np.asarray(model.predict(transformed, pred_contrib=True), dtype=np.float64)
        width = transformed.shape[1] + 1
        # Multiclass: (rows, (features + 1) * classes), one block per class.
        per_class = contrib.reshape(len(contrib), -1, width)
    else:
        import xgboost

        booster = model.get_booster()
        contrib = np.asarray(
            booster.predict(xgboost.DMatrix(transformed), pred_contribs=True), dtype=np.float64
        )
        # Binary / regression: (rows, features + 1); multiclass: (rows, classes, features + 1).
        per_class = contrib if contrib.ndim == 3 else contrib[:, None, :]
    # The last column of each block is the bias (the expected value), not a feature.
    means = np.abs(per_class[:, :, :-1]).mean(axis=(0, 1))
    ranked = sorted(zip(names, means.tolist(), strict=True), key=lambda item: -item[1])
    return [(name, float(value)) for name, value in ranked]


def _kind(model: Any) -> str | None:
    for base in type(model).__mro__:
        module = base.__module__.split(".")[0]
        if module in ("lightgbm", "xgboost"):
            return module
        if module == "sklearn" and base.__name__.startswith(_SKLEARN_TREES):
            return "sklearn"
    return None


def _sklearn_shap(model: Any, transformed: np.ndarray) -> np.ndarray | None:
    """SHAP values as ``(rows, classes, features)``; ``None`` without the ``shap`` package."""
    try:
        import shap
    except ImportError:
        return None
    values = np.asarray(shap.TreeExplainer(model).shap_values(transformed), dtype=np.float64)
    if values.ndim == 2:  # regression or a single-output classifier: (rows, features)
        return values[:, None, :]
    return np.moveaxis(values, -1, 1)  # (rows, features, classes) → (rows, classes, features)


def _names(preprocess: Any, width: int) -> list[str]:
    try:
        names = [str(name) for name in preprocess.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        names = []
    return names if len(names) == width else [f"x{i}" for i in range(width)]
