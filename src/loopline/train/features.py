"""The feature pipeline: one scikit-learn transformer per role, fitted on training rows only.

:func:`build_preprocessor` turns a :class:`~loopline.train.roles.RoleAssignment` and the
job's :class:`~loopline.config.training.FeatureOptions` into an unfitted
``ColumnTransformer`` (a ``Pipeline`` of it and ``PCA`` when ``pca_variance`` is set):

- numeric: float64 → ``SimpleImputer(impute_numeric, add_indicator=True)`` → scaler;
- categorical: values as strings → ``SimpleImputer`` (``"__missing__"`` or most frequent)
  → one-hot (infrequent categories grouped, unknown ones safe), ordinal (unknown → -1) or
  scikit-learn's ``TargetEncoder`` (cross-fitted inside ``fit_transform``, seeded);
- datetime: :class:`DatetimeParts` → median imputer → scaler;
- text: ``TfidfVectorizer(max_features=200)`` per column (nulls read as empty text).

The output is a dense NumPy array (``TfidfVectorizer`` has no pandas output); names come
from ``get_feature_names_out()`` as ``<role>__<feature>`` (``numeric__tenure``,
``categorical__plan_b``, ``text_review__great``).

:func:`build_pipeline` puts the preprocessor and an estimator into one pipeline with the
steps ``preprocess`` [``resample``] ``model`` (search spaces name ``model__C`` ...). With a
resampler it is an imbalanced-learn ``Pipeline``: samplers run in ``fit`` only, so SMOTE
and random over / under-sampling see the training rows of each fold and never the rows
that are scored. Class weighting is not done here: it is the estimator's ``class_weight``
(see the candidate catalog).

>>> import pandas as pd
>>> from loopline.config.training import FeatureOptions
>>> from loopline.train.roles import infer_roles
>>> frame = pd.DataFrame({"tenure": [1.0, None, 9.0, 4.0], "plan": ["a", "b", "a", None]})
>>> pre = build_preprocessor(infer_roles(frame), FeatureOptions(), task="binary", seed=42)
>>> pre.fit_transform(frame).shape, list(pre.get_feature_names_out()[:2])
((4, 5), ['numeric__tenure', 'numeric__missingindicator_tenure'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from sklearn.utils.validation import check_is_fitted

from loopline.config.training import DEFAULT_PARTS, DatetimePart, FeatureOptions, Task
from loopline.errors import MissingDependencyError, TrainError
from loopline.train.roles import RoleAssignment

Resample = Literal["none", "smote", "random_over", "random_under"]
TargetTransform = Literal["none", "log"]

MISSING_CATEGORY = "__missing__"
TEXT_MAX_FEATURES = 200
TARGET_ENCODER_FOLDS = 5
_PARTS: tuple[str, ...] = get_args(DatetimePart)
_ACCESSORS = {"dayofweek": "day_of_week"}  # pandas' deprecated spelling → the current one


def build_preprocessor(
    roles: RoleAssignment, options: FeatureOptions, *, task: Task, seed: int
) -> ColumnTransformer | Pipeline:
    """The unfitted preprocessing for the kept columns of ``roles`` (module docstring)."""
    steps: list[tuple[str, Any, Any]] = []
    if roles.numeric:
        steps.append(("numeric", _numeric(options), list(roles.numeric)))
    if roles.categorical:
        steps.append(("categorical", _categorical(options, task, seed), list(roles.categorical)))
    if roles.datetime:
        steps.append(("datetime", _datetime(options), list(roles.datetime)))
    for column in roles.text:
        # A scalar column name hands the vectoriser the 1-D column it expects.
        steps.append((f"text_{column}", _text(), column))
    if not steps:
        raise TrainError(
            "no feature columns are left after dropping",
            dropped=", ".join(f"{c} ({r})" for c, r in roles.dropped.items()) or None,
            hint="keep a column with 'roles:' or remove it from 'drop'",
        )
    columns = ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)
    if options.pca_variance is None:
        return columns
    # A share of 1.0 means every component; PCA reads a float only as a share below 1.
    n_components = options.pca_variance if options.pca_variance < 1 else None
    return Pipeline(
        [("columns", columns), ("pca", PCA(n_components=n_components, svd_solver="full"))]
    )


def build_pipeline(
    preprocessor: ColumnTransformer | Pipeline,
    estimator: Any,
    *,
    resample: Resample | None = None,
    seed: int = 0,
) -> Pipeline:
    """``preprocess`` → [``resample``] → ``model``; resampling makes it an imblearn Pipeline.

    SMOTE interpolates between a row and its ``k_neighbors=5`` nearest minority rows, so
    each training fold needs at least 6 rows of the minority class.

    >>> from sklearn.dummy import DummyClassifier
    >>> from sklearn.preprocessing import StandardScaler
    >>> build_pipeline(StandardScaler(), DummyClassifier()).named_steps.keys()
    dict_keys(['preprocess', 'model'])
    """
    if resample is None or resample == "none":
        return Pipeline([("preprocess", preprocessor), ("model", estimator)])
    try:
        from imblearn.over_sampling import SMOTE, RandomOverSampler
        from imblearn.pipeline import Pipeline as ResamplingPipeline
        from imblearn.under_sampling import RandomUnderSampler
    except ImportError as exc:
        raise MissingDependencyError("imbalanced-learn", "train") from exc
    samplers = {
        "smote": SMOTE,
        "random_over": RandomOverSampler,
        "random_under": RandomUnderSampler,
    }
    if resample not in samplers:
        raise TrainError(
            f"unknown resampling {resample!r}",
            hint=f"use one of: none, {', '.join(samplers)}",
        )
    sampler = samplers[resample](random_state=seed)
    pipeline: Pipeline = ResamplingPipeline(
        [("preprocess", preprocessor), ("resample", sampler), ("model", estimator)]
    )
    return pipeline


def with_target_transform(model: Any, transform: TargetTransform) -> Any:
    """``model`` trained on the transformed target, predicting on the original scale.

    ``none`` returns ``model`` itself; ``log`` a ``TransformedTargetRegressor`` that fits
    ``model`` on ``log(y)`` and returns ``exp`` of its predictions, so every metric computed
    on them is on the scale of ``y`` (RMSE in dollars for a price). A prediction of ``exp``
    of the mean of log(y) is the geometric, not the arithmetic, mean: a log model trades a
    small bias in dollars for errors that scale with the price.

    >>> from sklearn.dummy import DummyRegressor
    >>> model = with_target_transform(DummyRegressor(), "log").fit([[0], [1]], [1.0, 100.0])
    >>> round(float(model.predict([[0]])[0]), 6)
    10.0
    """
    if transform == "none":
        return model
    if transform != "log":
        raise TrainError(f"unknown target transform {transform!r}", hint="use 'none' or 'log'")
    return TransformedTargetRegressor(
        regressor=model, func=np.log, inverse_func=np.exp, check_inverse=False
    )


def check_target_transform(y: Any, transform: TargetTransform, *, task: Task, target: str) -> None:
    """Raise :class:`TrainError` when ``transform`` cannot apply to target ``y``.

    ``log`` needs a regression task and a target above 0 everywhere.

    >>> check_target_transform([3.0, 0.5], "log", task="regression", target="price")
    >>> try:
    ...     check_target_transform([3.0, 0.0], "log", task="regression", target="price")
    ... except TrainError as exc:
    ...     print(exc.fields["rows"])
    1
    """
    if transform == "none":
        return
    if task != "regression":
        raise TrainError(
            f"target_transform {transform!r} applies to regression; the task is {task}",
            column=target,
            task=task,
            hint="remove target_transform from the job, or set task: regression",
        )
    values = np.asarray(y, dtype=np.float64)
    bad = ~(values > 0)
    if bad.any():
        smallest = float(np.nanmin(values)) if not np.isnan(values).all() else float("nan")
        raise TrainError(
            f"target_transform 'log' needs a target above 0; {target!r} has "
            f"{int(bad.sum())} value(s) <= 0 (smallest {smallest:g})",
            column=target,
            rows=int(bad.sum()),
            hint="use target_transform: none, or shift the target to be positive",
        )


class DatetimeParts(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Calendar parts of datetime columns as floats (NaN where the value is missing).

    Strings are parsed as ISO 8601 (anything else becomes missing); timezone-aware values
    give the parts of their own wall clock. ``dayofweek`` is 0 for Monday.

    >>> stamps = pd.DataFrame({"signup": pd.to_datetime(["2024-03-01 10:00", None])})
    >>> parts = DatetimeParts(parts=["year", "dayofweek", "hour"]).fit(stamps)
    >>> parts.transform(stamps).tolist(), list(parts.get_feature_names_out())
    ([[2024.0, 4.0, 10.0], [nan, nan, nan]], ['signup_year', 'signup_dayofweek', 'signup_hour'])
    """

    def __init__(self, parts: Sequence[DatetimePart] = DEFAULT_PARTS) -> None:
        self.parts = parts

    def fit(self, X: Any, y: Any = None) -> DatetimeParts:
        bad = [p for p in self.parts if p not in _PARTS]
        if bad or not self.parts:
            raise TrainError(
                f"The 'parts' parameter of DatetimeParts must be a non-empty list of "
                f"{', '.join(_PARTS)}. Got {list(self.parts)!r} instead.",
                hint="fix features.datetime_parts in the job",
            )
        frame = _as_frame(X)
        self.n_features_in_ = frame.shape[1]
        if isinstance(X, pd.DataFrame):
            self.columns_ = [str(c) for c in frame.columns]
            self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        else:
            self.columns_ = [f"x{i}" for i in range(frame.shape[1])]  # scikit-learn's names
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "columns_")
        frame = _as_frame(X)
        if frame.shape[1] != self.n_features_in_:
            raise TrainError(
                f"DatetimeParts was fitted on {self.n_features_in_} column(s); "
                f"got {frame.shape[1]}",
                hint="transform the same datetime columns the pipeline was fitted on",
            )
        out = np.empty((len(frame), frame.shape[1] * len(self.parts)), dtype=np.float64)
        for i in range(frame.shape[1]):
            stamps = _to_datetime(frame.iloc[:, i])
            for j, part in enumerate(self.parts):
                values = getattr(stamps.dt, _ACCESSORS.get(part, part))
                out[:, i * len(self.parts) + j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
        check_is_fitted(self, "columns_")
        names = self.columns_ if input_features is None else [str(c) for c in input_features]
        return np.asarray([f"{c}_{p}" for c in names for p in self.parts], dtype=object)


def _numeric(options: FeatureOptions) -> Pipeline:
    steps: list[tuple[str, Any]] = [
        ("float", FunctionTransformer(_as_float, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy=options.impute_numeric, add_indicator=True)),
    ]
    return Pipeline(steps + _scaler(options))


def _categorical(options: FeatureOptions, task: Task, seed: int) -> Pipeline:
    if options.impute_categorical == "constant":
        imputer = SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)
    else:
        imputer = SimpleImputer(strategy="most_frequent")
    encoder: Any
    if options.encoding == "onehot":
        share = options.min_frequency
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            # Below 1 a share of the rows, from 1 on a row count (as OneHotEncoder reads it).
            min_frequency=share if share < 1 else int(share),
            sparse_output=False,
        )
    elif options.encoding == "ordinal":
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1
        )
    else:
        splitter: KFold = (
            KFold(TARGET_ENCODER_FOLDS, shuffle=True, random_state=seed)
            if task == "regression"
            else StratifiedKFold(TARGET_ENCODER_FOLDS, shuffle=True, random_state=seed)
        )
        target_type = "continuous" if task == "regression" else task
        encoder = TargetEncoder(target_type=target_type, cv=splitter)
    return Pipeline(
        [
            ("strings", FunctionTransformer(_as_category_strings, feature_names_out="one-to-one")),
            ("impute", imputer),
            ("encode", encoder),
        ]
    )


def _datetime(options: FeatureOptions) -> Pipeline:
    steps: list[tuple[str, Any]] = [
        ("parts", DatetimeParts(parts=list(options.datetime_parts))),
        ("impute", SimpleImputer(strategy="median")),
    ]
    return Pipeline(steps + _scaler(options))


def _text() -> Pipeline:
    return Pipeline(
        [
            ("strings", FunctionTransformer(_text_values, feature_names_out="one-to-one")),
            ("tfidf", TfidfVectorizer(max_features=TEXT_MAX_FEATURES)),
        ]
    )


def _scaler(options: FeatureOptions) -> list[tuple[str, Any]]:
    scalers = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}
    if options.scaling == "none":
        return []
    return [("scale", scalers[options.scaling]())]


# Module-level functions, not lambdas: a fitted pipeline must pickle.
def _as_float(X: Any) -> Any:
    """Numbers as float64 with NaN for every kind of missing (None, pd.NA, NaT-free)."""
    if isinstance(X, pd.DataFrame):
        return X.astype(np.float64)
    return np.asarray(X, dtype=np.float64)


def _as_category_strings(X: Any) -> pd.DataFrame:
    """Categories as strings (one type per column for the encoders), NaN where missing.

    On one object array rather than column by column in pandas: a served model runs this
    on every micro-batch (0.05 ms for 16 rows instead of 2 ms).
    """
    frame = _as_frame(X)
    values = frame.to_numpy(dtype=object, na_value=np.nan)
    text = values.astype(str).astype(object)
    text[pd.isna(values)] = np.nan
    return pd.DataFrame(text, index=frame.index, columns=frame.columns, dtype=object)


def _text_values(X: Any) -> pd.Series:
    """One text column as strings, nulls as empty text (the vectoriser rejects NaN)."""
    if isinstance(X, pd.DataFrame):
        X = X.iloc[:, 0]
    series = X if isinstance(X, pd.Series) else pd.Series(np.asarray(X, dtype=object).ravel())
    return series.fillna("").astype(str)


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    array = np.asarray(X)
    return pd.DataFrame(array.reshape(len(array), -1))


def _to_datetime(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    if pd.api.types.infer_dtype(values, skipna=True) in ("date", "datetime"):
        return pd.to_datetime(values, errors="coerce")
    # Strings: ISO 8601 only (no format guessing); mixed offsets are read in UTC.
    return pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
