from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.datasets import make_classification
from sklearn.naive_bayes import GaussianNB

from loopline.errors import EvaluationError
from loopline.evaluate.calibration import calibrate, reliability_curve
from loopline.evaluate.metrics import score_all


def test_reliability_curve_equals_scikit_learn_with_counts(binary_scores) -> None:
    y, proba = binary_scores
    mean_pred, frac_pos, counts = reliability_curve(y, proba, n_bins=8)
    ref_frac, ref_mean = calibration_curve(y, proba, n_bins=8, strategy="uniform")
    assert mean_pred == pytest.approx(ref_mean)
    assert frac_pos == pytest.approx(ref_frac)
    assert counts.sum() == len(y)
    edges = np.linspace(0, 1, 9)
    assert counts[0] == int(((proba >= edges[0]) & (proba < edges[1])).sum())


def test_calibrate_wraps_calibrated_classifier_cv_and_lowers_brier() -> None:
    X, y = make_classification(n_samples=400, n_features=8, n_redundant=4, random_state=0)
    model = calibrate(GaussianNB(), "sigmoid", cv=3)
    assert isinstance(model, CalibratedClassifierCV)
    assert (model.method, model.cv) == ("sigmoid", 3)
    raw = GaussianNB().fit(X[:300], y[:300]).predict_proba(X[300:])[:, 1]
    fitted = model.fit(X[:300], y[:300]).predict_proba(X[300:])[:, 1]
    brier = {
        name: score_all("binary", y[300:], y_proba=p)["brier"]
        for name, p in [("raw", raw), ("calibrated", fitted)]
    }
    assert brier["calibrated"] < brier["raw"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: calibrate(GaussianNB(), "platt"), "unknown calibration method"),  # type: ignore[arg-type]
        (lambda: calibrate(GaussianNB(), "isotonic", cv=1), "at least 2 folds"),
        (lambda: reliability_curve([0, 1], [0.2, 1.4]), r"within \[0, 1\]"),
        (lambda: reliability_curve([0, 1], [0.2, 0.4], n_bins=0), "n_bins"),
    ],
)
def test_bad_calibration_requests_are_clear_errors(call, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        call()
