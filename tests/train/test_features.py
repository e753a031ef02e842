"""The feature pipeline (loopline.train.features): encoding, no leakage, names, pickling."""

from __future__ import annotations

import pickle
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import RandomOverSampler
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from loopline.config.training import FeatureOptions, FeatureRoles
from loopline.errors import TrainError
from loopline.train.features import (
    DatetimeParts,
    _as_category_strings,
    build_pipeline,
    build_preprocessor,
    check_target_transform,
    with_target_transform,
)
from loopline.train.roles import RoleAssignment, infer_roles

ROWS = 300


def _frame(rows: int = ROWS, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Churn-like rows with every role, some nulls, and a target that depends on them."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, rows).astype(float)
    tenure[rng.random(rows) < 0.1] = np.nan
    plan = rng.choice(["basic", "plus", "pro", "legacy"], rows, p=[0.5, 0.3, 0.19, 0.01])
    words = np.array(["slow", "outage", "great", "cheap", "support", "friendly"])
    review = [" ".join(rng.choice(words, 10)) + f" note {i}" for i in range(rows)]
    frame = pd.DataFrame(
        {
            "tenure": tenure,
            "charges": rng.normal(60, 15, rows),
            "plan": pd.Series(plan, dtype=object).where(rng.random(rows) > 0.05, None),
            "paperless": pd.Series(rng.choice([True, False], rows), dtype=object),
            "signup": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 700, rows), "D"),
            "review": pd.Series(review, dtype=object).where(rng.random(rows) > 0.05, None),
        }
    )
    logit = -0.04 * np.nan_to_num(tenure, nan=30) + (plan == "basic") + rng.normal(0, 0.5, rows)
    return frame, (logit > np.median(logit)).astype(np.int64)


def _roles(frame: pd.DataFrame) -> RoleAssignment:
    roles = infer_roles(frame, overrides=FeatureRoles(text=["review"]))
    assert roles.text == ("review",)
    return roles


def _column_transformer(pre: ColumnTransformer | Pipeline) -> ColumnTransformer:
    return pre if isinstance(pre, ColumnTransformer) else pre.named_steps["columns"]


@pytest.mark.parametrize("encoding", ["onehot", "ordinal", "target"])
def test_unseen_categories_transform_without_error(encoding: str) -> None:
    frame, y = _frame()
    options = FeatureOptions(encoding=encoding)  # type: ignore[arg-type]
    pipeline = build_pipeline(
        build_preprocessor(_roles(frame), options, task="binary", seed=0),
        LogisticRegression(max_iter=500),
    )
    pipeline.fit(frame, y)
    unseen = frame.head(3).copy()
    unseen["plan"] = ["enterprise", "trial", None]
    proba = pipeline.predict_proba(unseen)
    assert proba.shape == (3, 2)
    assert np.isfinite(proba).all()


def test_ordinal_encoding_maps_unknown_categories_to_minus_one() -> None:
    frame = pd.DataFrame({"plan": ["a", "b", "a", "c"] * 5})
    options = FeatureOptions(encoding="ordinal")
    pre = build_preprocessor(infer_roles(frame), options, task="binary", seed=0).fit(frame)
    out = pre.transform(pd.DataFrame({"plan": ["b", "zzz"]}))
    assert out.ravel().tolist() == [1.0, -1.0]


def test_infrequent_categories_are_grouped() -> None:
    frame = pd.DataFrame({"plan": ["a"] * 60 + ["b"] * 37 + ["c"] * 2 + ["d"]})
    options = FeatureOptions(min_frequency=0.05)
    pre = build_preprocessor(infer_roles(frame), options, task="binary", seed=0).fit(frame)
    names = pre.get_feature_names_out().tolist()
    assert names == [
        "categorical__plan_a",
        "categorical__plan_b",
        "categorical__plan_infrequent_sklearn",
    ]
    out = pre.transform(pd.DataFrame({"plan": ["c", "d", "never-seen", "a"]}))
    # Rare and unseen categories land in the infrequent column.
    assert out.tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0]]


def test_min_frequency_from_one_is_a_row_count() -> None:
    frame = pd.DataFrame({"plan": ["a"] * 5 + ["b"] * 3 + ["c"] * 2})
    options = FeatureOptions(min_frequency=3)
    pre = build_preprocessor(infer_roles(frame), options, task="binary", seed=0).fit(frame)
    assert pre.get_feature_names_out().tolist() == [
        "categorical__plan_a",
        "categorical__plan_b",
        "categorical__plan_infrequent_sklearn",
    ]


def test_missing_categories_become_their_own_category() -> None:
    frame = pd.DataFrame({"flag": pd.Series([True, False, None, True] * 5, dtype=object)})
    pre = build_preprocessor(infer_roles(frame), FeatureOptions(), task="binary", seed=0)
    out = pre.fit_transform(frame)
    names = pre.get_feature_names_out().tolist()
    assert names == [
        "categorical__flag_False",
        "categorical__flag_True",
        "categorical__flag___missing__",
    ]
    assert out[2].tolist() == [0.0, 0.0, 1.0]


def test_datetime_parts_are_correct() -> None:
    stamps = pd.DataFrame(
        {
            "at": pd.to_datetime(["2024-02-29 13:45", "1999-12-31 23:00", None]),
            "day": pd.Series(["2021-07-04", "not a date", None], dtype=object),
        }
    )
    parts = DatetimeParts(parts=["year", "month", "day", "dayofweek", "hour"]).fit(stamps)
    out = parts.transform(stamps)
    assert out[0, :5].tolist() == [2024, 2, 29, 3, 13]  # a Thursday
    assert out[1, :5].tolist() == [1999, 12, 31, 4, 23]  # a Friday
    assert np.isnan(out[2]).all()
    assert out[0, 5:].tolist() == [2021, 7, 4, 6, 0]  # a Sunday
    assert np.isnan(out[1, 5:]).all()  # unparseable → missing, not an error
    assert parts.get_feature_names_out().tolist()[:2] == ["at_year", "at_month"]


def test_datetime_parts_keep_the_wall_clock_of_aware_values() -> None:
    aware = pd.DataFrame({"at": pd.to_datetime(["2024-01-01 23:30"]).tz_localize("Asia/Tokyo")})
    assert DatetimeParts(parts=["day", "hour"]).fit_transform(aware).tolist() == [[1.0, 23.0]]


def test_datetime_parts_reject_an_unknown_part() -> None:
    with pytest.raises(TrainError, match="The 'parts' parameter of DatetimeParts"):
        DatetimeParts(parts=["week"]).fit(pd.DataFrame({"at": pd.to_datetime(["2024-01-01"])}))  # type: ignore[list-item]


def test_no_leakage_imputer_and_scaler_learn_from_training_rows_only() -> None:
    frame, y = _frame()
    train, valid = np.arange(200), np.arange(200, ROWS)
    # Make validation rows very different: a full-data fit would move median and mean.
    frame.loc[valid, "tenure"] = frame.loc[valid, "tenure"] + 1000
    pipeline = build_pipeline(
        build_preprocessor(_roles(frame), FeatureOptions(), task="binary", seed=0),
        LogisticRegression(max_iter=500),
    ).fit(frame.iloc[train], y[train])
    numeric = pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    train_tenure = frame["tenure"].iloc[train]
    assert numeric.named_steps["impute"].statistics_[0] == train_tenure.median()
    assert numeric.named_steps["impute"].statistics_[0] != frame["tenure"].median()
    # A missing validation value is imputed with the train median, then scaled as in train.
    imputed_train = train_tenure.fillna(train_tenure.median())
    scaler = numeric.named_steps["scale"]
    assert scaler.mean_[0] == pytest.approx(imputed_train.mean())
    row = frame.iloc[[valid[0]]].copy()
    row["tenure"] = np.nan
    out = pipeline.named_steps["preprocess"].transform(row)
    expected = (train_tenure.median() - imputed_train.mean()) / imputed_train.std(ddof=0)
    assert out[0, 0] == pytest.approx(expected)


class RecordingOverSampler(RandomOverSampler):  # type: ignore[misc]
    """A real RandomOverSampler that records every batch of rows it resamples."""

    seen: ClassVar[list[tuple[int, np.ndarray]]] = []

    def _fit_resample(self, X: Any, y: Any, **params: Any) -> Any:
        RecordingOverSampler.seen.append((X.shape[0], np.bincount(y)))
        return super()._fit_resample(X, y, **params)


def test_no_leakage_resampler_only_sees_training_folds() -> None:
    frame, y = _frame()
    y = (np.arange(ROWS) % 5 == 0).astype(np.int64)  # 20 % positives
    pipeline = build_pipeline(
        build_preprocessor(_roles(frame), FeatureOptions(), task="binary", seed=0),
        LogisticRegression(max_iter=500),
        resample="random_over",
        seed=0,
    )
    assert type(pipeline.named_steps["resample"]) is RandomOverSampler
    pipeline.set_params(resample=RecordingOverSampler(random_state=0))
    RecordingOverSampler.seen.clear()
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(frame, y))
    result = cross_validate(pipeline, frame, y, cv=folds, scoring="roc_auc")
    # One resampling per fit, none while scoring, each on exactly the fold's training rows.
    assert len(RecordingOverSampler.seen) == len(folds)
    for (rows, counts), (train, _) in zip(RecordingOverSampler.seen, folds, strict=True):
        assert rows == len(train)
        assert counts.tolist() == np.bincount(y[train]).tolist()
    assert len(result["test_score"]) == len(folds)


def test_resampling_pipeline_predicts_every_scored_row() -> None:
    frame, _ = _frame()
    y = (np.arange(ROWS) % 5 == 0).astype(np.int64)
    pipeline = build_pipeline(
        build_preprocessor(_roles(frame), FeatureOptions(), task="binary", seed=0),
        LogisticRegression(max_iter=500),
        resample="smote",
        seed=0,
    ).fit(frame.iloc[:200], y[:200])
    assert pipeline.predict(frame.iloc[200:]).shape == (100,)


def test_target_encoding_is_cross_fitted_on_training_rows() -> None:
    frame, y = _frame()
    roles = infer_roles(frame[["plan"]])
    pre = build_preprocessor(roles, FeatureOptions(encoding="target"), task="binary", seed=0)
    crossed = pre.fit_transform(frame[["plan"]], y)
    refitted = pre.transform(frame[["plan"]])
    # fit_transform encodes each row with a model that did not see it: it differs from
    # the full-fit encoding, which is what scoring rows get.
    assert not np.allclose(crossed, refitted)
    encoder = pre.named_transformers_["categorical"].named_steps["encode"]
    assert pre.transform(pd.DataFrame({"plan": ["never-seen"]}))[0, 0] == pytest.approx(
        encoder.target_mean_
    )


def test_target_encoding_for_regression_and_multiclass() -> None:
    frame, y = _frame()
    roles = infer_roles(frame[["plan"]])
    regression = build_preprocessor(
        roles, FeatureOptions(encoding="target"), task="regression", seed=0
    )
    assert regression.fit_transform(frame[["plan"]], y * 2.5 + 1).shape == (ROWS, 1)
    multiclass = build_preprocessor(
        roles, FeatureOptions(encoding="target"), task="multiclass", seed=0
    )
    assert multiclass.fit_transform(frame[["plan"]], np.arange(ROWS) % 3).shape == (ROWS, 3)


@pytest.mark.parametrize(
    ("scaling", "check"),
    [
        ("minmax", lambda x: x.min() == pytest.approx(0) and x.max() == pytest.approx(1)),
        ("robust", lambda x: np.median(x) == pytest.approx(0)),
        ("standard", lambda x: x.mean() == pytest.approx(0) and x.std() == pytest.approx(1)),
        ("none", lambda x: x.max() == pytest.approx(90.0)),
    ],
)
def test_scaling_options(scaling: str, check: Any) -> None:
    frame = pd.DataFrame({"charges": np.linspace(10.0, 90.0, 41)})
    options = FeatureOptions(scaling=scaling)  # type: ignore[arg-type]
    out = build_preprocessor(infer_roles(frame), options, task="regression", seed=0).fit_transform(
        frame
    )
    assert check(out[:, 0])


def test_feature_names_match_the_output_end_to_end() -> None:
    frame, y = _frame()
    pipeline = build_pipeline(
        build_preprocessor(_roles(frame), FeatureOptions(), task="binary", seed=0),
        LogisticRegression(max_iter=500),
    ).fit(frame, y)
    pre = pipeline.named_steps["preprocess"]
    names = pre.get_feature_names_out()
    assert (
        len(names) == pre.transform(frame).shape[1] == pipeline.named_steps["model"].coef_.shape[1]
    )
    assert {"numeric__tenure", "numeric__missingindicator_tenure", "numeric__charges"} <= set(names)
    assert "categorical__plan_basic" in names
    assert "categorical__plan_infrequent_sklearn" in names  # 'legacy' is 1 % of rows
    assert {"datetime__signup_year", "datetime__signup_dayofweek"} <= set(names)
    assert "text_review__outage" in names


def test_pca_keeps_components_for_the_asked_variance() -> None:
    frame, y = _frame()
    options = FeatureOptions(pca_variance=0.8)
    pre = build_preprocessor(_roles(frame), options, task="binary", seed=0)
    out = pre.fit_transform(frame, y)
    ratios = np.cumsum(pre.named_steps["pca"].explained_variance_ratio_)
    assert ratios[-1] >= 0.8 > ratios[-2]
    assert out.shape[1] == len(ratios) == len(pre.get_feature_names_out())
    width = _column_transformer(pre).transform(frame).shape[1]
    assert out.shape[1] < width


def test_pca_variance_one_keeps_every_component() -> None:
    frame = pd.DataFrame({"a": np.arange(30.0), "b": np.arange(30.0) ** 2})
    pre = build_preprocessor(
        infer_roles(frame), FeatureOptions(pca_variance=1.0), task="regression", seed=0
    )
    assert pre.fit_transform(frame).shape == (30, 2)


def test_fitted_pipeline_pickles_with_identical_predictions() -> None:
    frame, y = _frame()
    pipeline = build_pipeline(
        build_preprocessor(_roles(frame), FeatureOptions(), task="binary", seed=0),
        LogisticRegression(max_iter=500),
        resample="smote",
        seed=0,
    ).fit(frame.iloc[:200], y[:200])
    restored = pickle.loads(pickle.dumps(pipeline))
    scored = frame.iloc[200:]
    np.testing.assert_array_equal(restored.predict_proba(scored), pipeline.predict_proba(scored))


def test_regression_pipeline_without_resampling_is_a_sklearn_pipeline() -> None:
    frame, y = _frame()
    pipeline = build_pipeline(
        build_preprocessor(_roles(frame), FeatureOptions(), task="regression", seed=0),
        LinearRegression(),
        resample="none",
    )
    assert type(pipeline) is Pipeline
    assert list(pipeline.named_steps) == ["preprocess", "model"]
    assert pipeline.fit(frame, y.astype(float)).predict(frame).shape == (ROWS,)


def test_nullable_numeric_dtypes_are_imputed() -> None:
    frame = pd.DataFrame({"n": pd.array([1, None, 3, 5], dtype="Int64")})
    options = FeatureOptions(scaling="none")
    out = build_preprocessor(infer_roles(frame), options, task="regression", seed=0).fit_transform(
        frame
    )
    assert out.tolist() == [[1.0, 0.0], [3.0, 1.0], [3.0, 0.0], [5.0, 0.0]]


def test_decimal_columns_become_floats() -> None:
    frame = pd.DataFrame(
        {"amount": pd.Series([Decimal("1.5"), None, Decimal("2.5")], dtype=object)}
    )
    options = FeatureOptions(scaling="none")
    out = build_preprocessor(infer_roles(frame), options, task="regression", seed=0).fit_transform(
        frame
    )
    assert out.tolist() == [[1.5, 0.0], [2.0, 1.0], [2.5, 0.0]]


def test_datetime_parts_accept_arrays() -> None:
    stamps = np.array(["2024-05-06T07:00"], dtype="datetime64[ns]").reshape(-1, 1)
    parts = DatetimeParts(parts=["month", "hour"]).fit(stamps)
    assert parts.transform(stamps).tolist() == [[5.0, 7.0]]
    assert parts.get_feature_names_out().tolist() == ["x0_month", "x0_hour"]


def test_no_features_left_is_an_error() -> None:
    roles = infer_roles(pd.DataFrame({"c": [1, 1, 1]}))
    with pytest.raises(TrainError, match="no feature columns") as info:
        build_preprocessor(roles, FeatureOptions(), task="binary", seed=0)
    assert "c (constant" in info.value.fields["dropped"]


def test_unknown_resampling_is_an_error() -> None:
    with pytest.raises(TrainError, match="unknown resampling 'adasyn'"):
        build_pipeline(None, LogisticRegression(), resample="adasyn")  # type: ignore[arg-type]


def test_a_log_target_model_learns_log_y_and_predicts_on_the_original_scale() -> None:
    frame, _ = _frame()
    price = np.exp(3.0 + 0.02 * frame["charges"].to_numpy())
    roles = infer_roles(frame[["charges", "plan"]])

    def pipeline() -> Pipeline:
        pre = build_preprocessor(roles, FeatureOptions(), task="regression", seed=0)
        return build_pipeline(pre, LinearRegression())

    model = with_target_transform(pipeline(), "log").fit(frame, price)
    on_log = pipeline().fit(frame, np.log(price))
    np.testing.assert_allclose(model.predict(frame), np.exp(on_log.predict(frame)))
    np.testing.assert_allclose(model.predict(frame), price, rtol=1e-9)  # log-linear: exact
    assert pickle.loads(pickle.dumps(model)).predict(frame[:3]).shape == (3,)


def test_no_target_transform_is_the_model_itself() -> None:
    model = LinearRegression()
    assert with_target_transform(model, "none") is model


def test_a_log_transform_of_a_target_with_zeros_is_an_error() -> None:
    with pytest.raises(TrainError, match="above 0") as info:
        check_target_transform([5.0, 0.0, -1.0, np.nan], "log", task="regression", target="price")
    assert info.value.fields == {"column": "price", "rows": 3}
    assert info.value.hint is not None


def test_a_log_transform_of_a_classification_target_is_an_error() -> None:
    with pytest.raises(TrainError, match="applies to regression"):
        check_target_transform([0, 1, 1], "log", task="binary", target="churn")


@pytest.mark.parametrize("dtype", [object, "str", "category"])
def test_category_strings_are_python_strings_with_nan_for_missing(dtype: Any) -> None:
    frame = pd.DataFrame({"plan": ["a", None, "b"], "code": ["1", "2", pd.NA]}).astype(dtype)
    out = _as_category_strings(frame)
    assert list(out.columns) == ["plan", "code"]
    assert all(dtype == np.dtype(object) for dtype in out.dtypes)
    assert out["plan"].tolist()[::2] == ["a", "b"]
    assert out["code"].tolist()[:2] == ["1", "2"]
    assert np.isnan(out.loc[1, "plan"])
    assert np.isnan(out.loc[2, "code"])
    numbers = _as_category_strings(np.array([[1.5, True], [np.nan, None]], dtype=object))
    assert numbers.iloc[0].tolist() == ["1.5", "True"]
    assert numbers.iloc[1].isna().all()
