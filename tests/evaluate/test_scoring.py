"""Scoring registered versions from their loopline tags, against a real MLflow SQLite store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from loopline.config import TrackingConfig
from loopline.errors import EvaluationError, RegistryError
from loopline.evaluate.model_tags import ModelTags
from loopline.evaluate.scoring import (
    VersionScorer,
    label_keys,
    promotion_gate,
    read_scoring_table,
    resolve_version,
    score_registered,
)
from loopline.registry import ModelRegistry, VersionInfo
from loopline.store.tracking import Tracker
from loopline.store.warehouse import open_warehouse

pytest.importorskip("mlflow")

Logged = tuple[str, str, Any]  # model URI, run id, fitted model


def churn_frame(rows: int, seed: int) -> pd.DataFrame:
    """Customers whose churn depends on tenure and plan, target "Yes" / "No"."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, rows)
    plan = rng.choice(["basic", "plus", "pro"], rows)
    logit = 1.5 - 0.08 * tenure + np.where(plan == "basic", 1.0, 0.0) + rng.normal(0, 1, rows)
    return pd.DataFrame(
        {
            "tenure": tenure,
            "charges": rng.normal(70, 20, rows),
            "plan": plan,
            "churned": np.where(logit > 0, "Yes", "No"),
        }
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    base = tmp_path_factory.mktemp("project")
    return ModelRegistry(Tracker(TrackingConfig(), base_dir=base, experiment="scoring"))


def log(registry: ModelRegistry, model: Any, features: pd.DataFrame) -> Logged:
    with registry.tracker.start_run(type(model).__name__) as run:
        uri = run.log_model(model, input_example=features.head(3))
    return uri, run.run_id, model


@pytest.fixture(scope="module")
def churn_model(registry: ModelRegistry) -> Logged:
    train = churn_frame(300, seed=1)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("num", StandardScaler(), ["tenure", "charges"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ]
        ),
        LogisticRegression(),
    )
    features = train.drop(columns="churned")
    return log(registry, pipeline.fit(features, train["churned"]), features)


@pytest.fixture(scope="module")
def numeric_binary_model(registry: ModelRegistry) -> Logged:
    """A 0/1 target: read back with nulls, it comes as floats."""
    train = churn_frame(300, seed=2)
    features = train[["tenure", "charges"]]
    model = LogisticRegression().fit(features, (train["churned"] == "Yes").astype(int))
    return log(registry, model, features)


def churn_tags(**changes: Any) -> dict[str, str]:
    tags = ModelTags(
        target="churned",
        task="binary",
        primary_metric="roc_auc",
        threshold=0.3,
        positive_class="Yes",
        classes=["No", "Yes"],
        holdout_metrics={"roc_auc": 0.81, "pr_auc": 0.7},
        lineage={"table": "churn", "rows": 300},
    ).to_tags()
    return tags | changes


def register(registry: ModelRegistry, logged: Logged, tags: dict[str, str]) -> VersionInfo:
    """A fresh model name with one version carrying ``tags`` (the store is module-wide)."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    uri, run_id, _ = logged
    info = registry.register(name, uri, run_id=run_id)
    for key, value in tags.items():
        registry.tracker.client.set_model_version_tag(name, info.version, key, value)
    return registry.version(name, info.version)


def test_binary_metrics_match_sklearn_at_the_shipped_threshold(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, churn_tags())
    test = churn_frame(200, seed=9)
    result = score_registered(registry, info.name, "challenger", test)
    proba = churn_model[2].predict_proba(test.drop(columns="churned"))[:, 1]
    truth = test["churned"] == "Yes"
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, proba))
    assert result.metrics["pr_auc"] == pytest.approx(skm.average_precision_score(truth, proba))
    at_threshold = proba >= 0.3
    assert result.metrics["recall"] == pytest.approx(skm.recall_score(truth, at_threshold))
    assert result.metrics["precision"] == pytest.approx(skm.precision_score(truth, at_threshold))
    assert result.metrics["recall"] > skm.recall_score(truth, proba >= 0.5)
    assert (result.threshold, result.positive_class, result.rows) == (0.3, "Yes", 200)


def test_lineage_columns_are_ignored_and_null_targets_dropped_and_counted(
    registry: ModelRegistry, numeric_binary_model: Logged
) -> None:
    tags = churn_tags(**{"loopline.classes": "[0, 1]", "loopline.positive_class": "1"})
    info = register(registry, numeric_binary_model, tags)
    test = churn_frame(120, seed=4)
    target: list[int | None] = [int(v == "Yes") for v in test["churned"]]
    target[:7] = [None] * 7
    table = pa.table(
        {
            "tenure": test["tenure"],
            "charges": test["charges"],
            "churned": pa.array(target, pa.int64()),
            "_batch_id": ["b1"] * 120,
            "_source": ["crm"] * 120,
        }
    )
    result = score_registered(registry, info.name, info.version, table)
    assert (result.rows, result.dropped_null_target) == (113, 7)
    kept = test.iloc[7:]
    proba = numeric_binary_model[2].predict_proba(kept[["tenure", "charges"]])[:, 1]
    expected = skm.roc_auc_score(kept["churned"] == "Yes", proba)
    assert result.metrics["roc_auc"] == pytest.approx(expected)


def test_regression_metrics_match_sklearn(registry: ModelRegistry) -> None:
    data = load_diabetes(as_frame=True).frame
    train, test = data.iloc[:300], data.iloc[300:]
    features = train.drop(columns="target")
    logged = log(registry, Ridge(alpha=0.5).fit(features, train["target"]), features)
    tags = ModelTags(target="target", task="regression", primary_metric="rmse").to_tags()
    info = register(registry, logged, tags)
    result = score_registered(registry, info.name, info.version, test)
    predicted = logged[2].predict(test.drop(columns="target"))
    assert result.metrics["rmse"] == pytest.approx(
        skm.root_mean_squared_error(test["target"], predicted)
    )
    assert result.metrics["r2"] == pytest.approx(skm.r2_score(test["target"], predicted))
    assert result.threshold is None


def test_multiclass_metrics_match_sklearn(registry: ModelRegistry) -> None:
    iris = load_iris(as_frame=True)
    frame = iris.frame.assign(species=iris.target_names[iris.target]).drop(columns="target")
    shuffled = frame.sample(frac=1.0, random_state=0)
    train, test = shuffled.iloc[:100], shuffled.iloc[100:]
    features = train.drop(columns="species")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05))
    logged = log(registry, model.fit(features, train["species"]), features)
    tags = ModelTags(
        target="species",
        task="multiclass",
        primary_metric="f1_macro",
        classes=sorted(iris.target_names.tolist()),
    ).to_tags()
    info = register(registry, logged, tags)
    result = score_registered(registry, info.name, info.version, test)
    x_test = test.drop(columns="species")
    predicted = model.predict(x_test)
    assert result.metrics["f1_macro"] == pytest.approx(
        skm.f1_score(test["species"], predicted, average="macro")
    )
    assert result.metrics["log_loss"] == pytest.approx(
        skm.log_loss(test["species"], model.predict_proba(x_test), labels=model.classes_)
    )


def test_unknown_model_version_and_alias_are_registry_errors(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, churn_tags())
    frame = churn_frame(20, seed=3)
    with pytest.raises(RegistryError, match="no registered model named 'nope'"):
        score_registered(registry, "nope", "champion", frame)
    with pytest.raises(RegistryError, match="has no 'champion' version"):
        score_registered(registry, info.name, "champion", frame)
    with pytest.raises(RegistryError):
        score_registered(registry, info.name, 7, frame)
    assert resolve_version(registry, info.name, "1").version == "1"


def test_a_version_without_loopline_tags_is_a_clear_error(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, {})
    with pytest.raises(EvaluationError, match="no loopline training tags") as caught:
        score_registered(registry, info.name, info.version, churn_frame(20, seed=3))
    assert caught.value.fields["model"] == info.name
    assert "loopline train" in (caught.value.hint or "")


def test_missing_target_or_feature_columns_are_named(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, churn_tags())
    frame = churn_frame(30, seed=5)
    with pytest.raises(EvaluationError, match="no target column 'churned'"):
        score_registered(registry, info.name, "1", frame.drop(columns="churned"))
    with pytest.raises(EvaluationError, match="lacks 1 column") as caught:
        score_registered(registry, info.name, "1", frame.drop(columns="plan"))
    assert caught.value.fields["missing"] == "plan"
    nulls = frame.assign(churned=None)
    with pytest.raises(EvaluationError, match="no rows with a target value"):
        score_registered(registry, info.name, "1", nulls)


def test_a_class_the_model_never_saw_is_an_evaluation_error(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, churn_tags())
    frame = churn_frame(30, seed=5)
    frame.loc[0, "churned"] = "Maybe"
    with pytest.raises(EvaluationError, match="not in labels"):
        score_registered(registry, info.name, "1", frame)


def test_read_scoring_table_lists_the_tables_when_one_is_unknown(tmp_path: Path) -> None:
    warehouse = open_warehouse("duckdb:///wh.duckdb", base_dir=tmp_path)
    try:
        warehouse.commit_batch(
            table="churn",
            data=pa.table({"a": [1, 2]}),
            mode="append",
            key=[],
            quarantine=None,
            job="j",
            batch_id="b1",
            state=None,
        )
        assert read_scoring_table(warehouse, "churn").num_rows == 2
        with pytest.raises(EvaluationError, match="no warehouse table named 'churm'") as caught:
            read_scoring_table(warehouse, "churm")
    finally:
        warehouse.close()
    assert "churn" in (caught.value.hint or "")


def test_version_scorer_uses_holdout_tags_without_a_table(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, churn_tags())
    scorer = VersionScorer(registry)
    assert scorer(info) == {"roc_auc": 0.81, "pr_auc": 0.7}
    assert scorer.scores == {info.version: {"roc_auc": 0.81, "pr_auc": 0.7}}
    bare = register(registry, churn_model, churn_tags(**{"loopline.holdout_metrics": ""}))
    with pytest.raises(EvaluationError, match="no logged holdout metrics"):
        VersionScorer(registry)(bare)


def test_version_scorer_with_a_table_scores_every_version_on_it(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, churn_tags())
    frame = churn_frame(80, seed=6)
    scorer = VersionScorer(registry, frame)
    scores = scorer(info)
    assert scores == score_registered(registry, info.name, info.version, frame).metrics
    assert scorer.results[info.version].rows == 80


def test_promotion_gate_defaults_to_the_primary_metric_and_its_direction(
    registry: ModelRegistry, churn_model: Logged
) -> None:
    info = register(registry, churn_model, churn_tags(**{"loopline.primary_metric": "log_loss"}))
    gate = promotion_gate(info, max_regression=0.01)
    assert (gate.metric, gate.greater_is_better, gate.max_regression) == ("log_loss", False, 0.01)
    assert promotion_gate(info, metric="roc_auc").greater_is_better is True
    assert promotion_gate(info, metric="custom", greater=False).greater_is_better is False
    with pytest.raises(EvaluationError, match="unknown metric 'custom'"):
        promotion_gate(info, metric="custom")


def test_label_keys_make_warehouse_targets_match_training_classes() -> None:
    assert label_keys(pd.Series([1.0, 0.0, 1.0])).tolist() == label_keys([1, 0, 1]).tolist()
    assert label_keys(np.array([True, False])).tolist() == ["true", "false"]
    assert label_keys(pd.Series(["Yes", "No"], dtype="string")).tolist() == ["Yes", "No"]
