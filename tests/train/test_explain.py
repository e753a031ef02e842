"""Native TreeSHAP contributions of LightGBM and XGBoost pipelines, nothing for others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from xgboost import XGBRegressor

from loopline.config.training import FeatureOptions
from loopline.train.explain import tree_contributions
from loopline.train.features import build_pipeline, build_preprocessor
from loopline.train.roles import infer_roles
from loopline.train.xgboost_classifier import XGBoostClassifier


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """``signal`` drives the target, ``plan`` a little, ``noise`` not at all."""
    rng = np.random.default_rng(0)
    n = 300
    return pd.DataFrame(
        {
            "signal": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "plan": rng.choice(["a", "b", "c"], size=n),
        }
    )


def pipeline(frame: pd.DataFrame, model: object) -> object:
    pre = build_preprocessor(infer_roles(frame), FeatureOptions(), task="binary", seed=0)
    return build_pipeline(pre, model)


def test_lightgbm_contributions_are_mean_absolute_tree_shap_values(frame: pd.DataFrame) -> None:
    y = (frame["signal"] + 0.3 * (frame["plan"] == "a") > 0).astype(int)
    model = LGBMClassifier(n_estimators=30, n_jobs=1, verbose=-1, random_state=0)
    pipe = pipeline(frame, model).fit(frame, y)  # type: ignore[attr-defined]
    result = tree_contributions(pipe, frame)
    names = [name for name, _ in result]
    assert names[0] == "numeric__signal"
    assert sorted(names) == sorted(pipe[0].get_feature_names_out())
    values = [value for _, value in result]
    assert values == sorted(values, reverse=True)
    transformed = pipe[0].transform(frame)
    contrib = model.predict(transformed, pred_contrib=True)
    # TreeSHAP: contributions plus the bias column add up to the raw score of each row.
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict(transformed, raw_score=True))
    expected = dict(
        zip(pipe[0].get_feature_names_out(), np.abs(contrib[:, :-1]).mean(axis=0), strict=True)
    )
    for name, value in result:
        assert value == pytest.approx(expected[name])


def test_xgboost_multiclass_contributions_average_over_classes(frame: pd.DataFrame) -> None:
    y = np.digitize(frame["signal"], [-0.5, 0.5])
    model = XGBoostClassifier(n_estimators=20, n_jobs=1, max_depth=3)
    pipe = pipeline(frame, model).fit(frame, y)  # type: ignore[attr-defined]
    result = tree_contributions(pipe, frame.head(100))
    assert result[0][0] == "numeric__signal"
    assert len(result) == len(pipe[0].get_feature_names_out())
    assert result[0][1] > 5 * dict(result)["numeric__noise"]


def test_xgboost_regression_contributions(frame: pd.DataFrame) -> None:
    y = 2.0 * frame["noise"] + 0.1 * frame["signal"]
    pipe = pipeline(frame, XGBRegressor(n_estimators=20, n_jobs=1)).fit(frame, y)  # type: ignore[attr-defined]
    assert tree_contributions(pipe, frame)[0][0] == "numeric__noise"


def test_other_models_and_bare_estimators_give_nothing(frame: pd.DataFrame) -> None:
    y = (frame["signal"] > 0).astype(int)
    pipe = pipeline(frame, LogisticRegression()).fit(frame, y)  # type: ignore[attr-defined]
    assert tree_contributions(pipe, frame) == []
    bare = LGBMClassifier(n_estimators=5, verbose=-1).fit(frame[["signal", "noise"]], y)
    assert tree_contributions(bare, frame[["signal", "noise"]]) == []


@pytest.mark.parametrize(
    "model",
    [
        RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0, n_jobs=1),
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
    ],
    ids=["random_forest", "hist_gradient_boosting"],
)
def test_scikit_learn_trees_get_shap_values_through_the_shap_package(
    frame: pd.DataFrame, model: object
) -> None:
    import shap

    y = (frame["signal"] > 0).astype(int)
    pipe = pipeline(frame, model).fit(frame, y)  # type: ignore[attr-defined]
    ranked = tree_contributions(pipe, frame)
    assert ranked[0][0] == "numeric__signal"
    transformed = pipe.steps[0][1].transform(frame.iloc[:200])  # type: ignore[attr-defined]
    values = np.asarray(shap.TreeExplainer(pipe.steps[-1][1]).shap_values(transformed))  # type: ignore[attr-defined]
    per_feature = np.abs(values).mean(axis=tuple(i for i in range(values.ndim) if i != 1))
    assert dict(ranked)["numeric__signal"] == pytest.approx(per_feature[0])
