"""XGBoost's classifier with scikit-learn's label and class-weight conventions.

``xgboost.XGBClassifier`` only accepts labels ``0 .. k-1`` and has no ``class_weight``.
:class:`XGBoostClassifier` encodes any labels (``"Yes"`` / ``"No"``, ``1 / 2 / 3``) in
``fit`` and decodes them in ``predict``, and with ``class_weight="balanced"`` weights
every row by ``n_samples / (n_classes * count(class))`` computed from the labels passed
to ``fit`` — the training fold only, so no validation label leaks into the weights.
For a binary target this is scale_pos_weight = negatives / positives up to a common
factor, and it works for multiclass targets too.

This module imports xgboost; :mod:`loopline.train.catalog` imports it only when an
XGBoost candidate is asked for.

>>> import numpy as np
>>> X = np.array([[0.0], [1.0], [2.0], [3.0]] * 5)
>>> y = np.array(["no", "no", "yes", "yes"] * 5)
>>> model = XGBoostClassifier(n_estimators=5, n_jobs=1, class_weight="balanced").fit(X, y)
>>> model.classes_.tolist(), model.predict(X[:4]).tolist()
(['no', 'yes'], ['no', 'no', 'yes', 'yes'])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier


class XGBoostClassifier(XGBClassifier):  # type: ignore[misc]
    """``XGBClassifier`` that accepts any class labels and ``class_weight="balanced"``."""

    def __init__(self, *, class_weight: Literal["balanced"] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.class_weight = class_weight

    def _wrapper_params(self) -> set[str]:
        # class_weight is ours: it must not reach the native booster as an unknown param.
        return {*super()._wrapper_params(), "class_weight"}

    def fit(self, X: Any, y: Any, *, sample_weight: Any = None, **kwargs: Any) -> XGBoostClassifier:
        """Encode ``y``, weight rows when ``class_weight="balanced"``, fit XGBoost."""
        encoder = LabelEncoder().fit(y)
        # XGBClassifier.fit checks its own classes_ (0..k-1) while fitting.
        self.__dict__.pop("label_encoder_", None)
        if self.class_weight == "balanced":
            balanced = compute_sample_weight("balanced", y)
            sample_weight = balanced if sample_weight is None else balanced * sample_weight
        elif self.class_weight is not None:
            raise ValueError(
                "The 'class_weight' parameter of XGBoostClassifier must be 'balanced' or None."
                f" Got {self.class_weight!r} instead."
            )
        super().fit(X, encoder.transform(y), sample_weight=sample_weight, **kwargs)
        self.label_encoder_ = encoder
        return self

    @property
    def classes_(self) -> np.ndarray:
        """The original class labels, in the column order of ``predict_proba``."""
        encoder = self.__dict__.get("label_encoder_")
        if encoder is None:
            return np.arange(self.n_classes_)
        return np.asarray(encoder.classes_)

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray:
        """The most likely class, as one of the original labels."""
        encoded = np.asarray(super().predict(X, **kwargs)).astype(int)
        return np.asarray(self.label_encoder_.inverse_transform(encoded))
