"""Small fixed data sets for the evaluation tests (a few hundred rows, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.datasets import make_classification


@pytest.fixture
def binary_data() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """300 rows, 5 features, about 30% positives."""
    X, y = make_classification(
        n_samples=300, n_features=5, n_informative=3, weights=[0.7], random_state=7
    )
    return X, y


@pytest.fixture
def binary_scores() -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Labels and noisy but informative positive-class probabilities."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=200)
    proba = np.clip(0.35 * y + rng.uniform(0, 0.65, size=200), 0, 1)
    return y, proba
