"""Probability calibration: a reliability curve to see it, CalibratedClassifierCV to fix it.

A model is calibrated when, among rows predicted at ~0.3, about 30% are positive. Check it
with ``reliability_curve`` on out-of-fold or held-out predictions; wrap a model with
``calibrate`` to learn an isotonic or sigmoid (Platt) mapping by internal cross-validation.

>>> mean_pred, frac_pos, counts = reliability_curve([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], n_bins=2)
>>> mean_pred.tolist(), frac_pos.tolist(), counts.tolist()
([0.15000000000000002, 0.8], [0.0, 1.0], [2, 2])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.calibration import CalibratedClassifierCV

from loopline.errors import EvaluationError

CalibrationMethod = Literal["isotonic", "sigmoid"]


def reliability_curve(
    y_true: ArrayLike, proba: ArrayLike, n_bins: int = 10, *, pos_label: Any = 1
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per non-empty uniform bin of [0, 1]: mean predicted probability, share of positives,
    row count (scikit-learn's ``calibration_curve(strategy="uniform")`` plus the counts)."""
    truth = np.asarray(y_true)
    scores = np.asarray(proba, dtype=float)
    if n_bins < 1:
        raise EvaluationError("n_bins must be at least 1", n_bins=n_bins)
    if truth.ndim != 1 or scores.shape != truth.shape:
        raise EvaluationError(
            "y_true and proba must be 1-D and of the same length",
            hint="pass the positive-class probability (predict_proba(X)[:, 1])",
        )
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        raise EvaluationError("probabilities must be finite and within [0, 1]")
    positive = (truth == pos_label).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], scores)
    counts = np.bincount(bins, minlength=n_bins)
    sums = np.bincount(bins, weights=scores, minlength=n_bins)
    hits = np.bincount(bins, weights=positive, minlength=n_bins)
    filled = counts > 0
    return sums[filled] / counts[filled], hits[filled] / counts[filled], counts[filled]


def calibrate(estimator: Any, method: CalibrationMethod, cv: int = 5) -> CalibratedClassifierCV:
    """An unfitted ``CalibratedClassifierCV`` around ``estimator`` (fit it like any model)."""
    if method not in ("isotonic", "sigmoid"):
        raise EvaluationError(
            f"unknown calibration method {method!r}", hint="use 'isotonic' or 'sigmoid'"
        )
    if cv < 2:
        raise EvaluationError("calibration needs at least 2 folds", cv=cv)
    return CalibratedClassifierCV(estimator, method=method, cv=cv)
