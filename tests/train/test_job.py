"""Training jobs end to end: warehouse or file → validated, explained, tracked, registered model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes

import loopline.train.job as job_module
from loopline.config import LooplineConfig, TrainJobConfig
from loopline.errors import ConfigError, TrainError
from loopline.evaluate.metrics import score_all
from loopline.registry import ModelRegistry
from loopline.store.tracking import Tracker
from loopline.store.warehouse import open_warehouse
from loopline.train.job import TrainingJob, TrainResult

BINARY_JOB: dict[str, Any] = {
    "table": "cancer",
    "target": "diagnosis",
    "candidates": [
        {"name": "logistic"},
        {"name": "lightgbm", "params": {"n_estimators": 40, "num_leaves": 8}},
    ],
    "search": {"method": "random", "n_trials": 2, "inner_folds": 2},
    "validation": {"folds": 3, "holdout": 0.25},
    "register_as": "cancer",
}


def cancer_frame(rows: int = 360) -> pd.DataFrame:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    frame = X.iloc[:rows, :8].copy()
    frame["diagnosis"] = np.where(y[:rows] == 1, "benign", "malignant")
    return frame


def project(path: Path) -> LooplineConfig:
    return LooplineConfig(project="cancer-study", project_dir=path)


@dataclass
class Spied:
    """What reached the holdout split, the search and the cross-validation of a run."""

    holdout: list[np.ndarray] = field(default_factory=list)
    search_rows: list[set[int]] = field(default_factory=list)
    cv_rows: list[set[int]] = field(default_factory=list)
    cv_test_rows: list[set[int]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture(scope="module")
def cancer_project(tmp_path_factory: pytest.TempPathFactory) -> LooplineConfig:
    """A project whose DuckDB warehouse holds 360 breast-cancer rows in ``cancer``."""
    config = project(tmp_path_factory.mktemp("cancer"))
    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=config.project_dir)
    try:
        warehouse.commit_batch(
            table="cancer",
            data=pa.Table.from_pandas(cancer_frame(), preserve_index=False),
            mode="append",
            key=[],
            quarantine=None,
            job="load-cancer",
            batch_id="batch-1",
            state=None,
        )
    finally:
        warehouse.close()
    return config


@pytest.fixture(scope="module")
def binary(cancer_project: LooplineConfig) -> Iterator[tuple[TrainResult, Spied]]:
    """One registered binary run, with the data that reached split, search and CV recorded
    by wrapping the real functions (they still do all the work)."""
    spied = Spied()
    real_split, real_search, real_cv = (
        job_module.holdout_split,
        job_module.search,
        job_module.cross_validate,
    )

    def holdout_split(*args: Any, **kwargs: Any) -> Any:
        train, test = real_split(*args, **kwargs)
        spied.holdout.append(test)
        return train, test

    def search(candidate: Any, task: Any, X: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
        spied.search_rows.append(set(X.index))
        return real_search(candidate, task, X, *args, **kwargs)

    def cross_validate(factory: Any, X: pd.DataFrame, y: Any, splitter: Any, **kw: Any) -> Any:
        result = real_cv(factory, X, y, splitter, **kw)
        spied.cv_rows.append(set(X.index))
        spied.cv_test_rows.append({int(X.index[i]) for f in result.folds for i in f.test_index})
        return result

    job = TrainJobConfig.model_validate(BINARY_JOB)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job_module, "holdout_split", holdout_split)
        patch.setattr(job_module, "search", search)
        patch.setattr(job_module, "cross_validate", cross_validate)
        runner = TrainingJob(
            cancer_project, "cancer", job, on_progress=lambda e, p: spied.events.append((e, p))
        )
        yield runner.run(), spied


def test_a_binary_job_trains_compares_and_scores_on_the_holdout(
    binary: tuple[TrainResult, Spied], cancer_project: LooplineConfig
) -> None:
    result, _ = binary
    assert result.task == "binary"
    assert result.primary_metric == "roc_auc"
    assert set(result.cv_summary) == {"logistic", "lightgbm"}
    means = {name: s["roc_auc"][0] for name, s in result.cv_summary.items()}
    assert result.best == max(means, key=means.__getitem__)
    assert means[result.best] > 0.95
    report = result.report_data
    assert report.classes == ["benign", "malignant"]
    assert report.positive_class == "malignant"
    # The holdout metrics are score_all on the refitted model's holdout predictions.
    truth = (report.y_holdout == "malignant").astype(int)
    assert result.threshold is not None
    expected = score_all("binary", truth, y_proba=report.holdout_pred, threshold=result.threshold)
    assert result.holdout_metrics == pytest.approx(expected)
    assert result.holdout_metrics["roc_auc"] == pytest.approx(
        skm.roc_auc_score(truth, report.holdout_pred)
    )
    assert report.n_train + report.n_test == report.rows == 360
    assert report.importances
    assert report.projection is not None
    assert report.projection.points.shape == (report.n_train, 2)
    (tsne,) = report.more_projections  # t-SNE beside PCA, on at most TSNE_ROWS rows
    assert tsne.method == "tsne"
    assert tsne.points.shape == (min(report.n_train, 500), 2)
    assert "tsne projection of training rows" in result.report_path.read_text()  # type: ignore[union-attr]
    assert report.roles
    assert all(role == "numeric" for _, role, _ in report.roles)
    assert result.report_path is not None
    assert result.report_path.is_file()
    assert result.report_path.parent == cancer_project.project_dir / "reports"
    assert result.mlflow_run_id in result.report_path.name


def test_progress_reports_roles_candidates_trials_and_folds(
    binary: tuple[TrainResult, Spied],
) -> None:
    _, spied = binary
    names = [event for event, _ in spied.events]
    assert names[:3] == ["data", "roles", "split"]
    assert names.count("trial") == 4  # 2 random trials per candidate
    assert names.count("fold") == 6  # 3 outer folds x 2 candidates
    assert names[-1] == "done"
    roles = dict(spied.events)["roles"]
    assert len(roles["summary"]) == 8


def test_the_threshold_is_chosen_on_out_of_fold_predictions_and_shipped(
    binary: tuple[TrainResult, Spied],
) -> None:
    result, _ = binary
    report = result.report_data
    choice = report.threshold
    assert choice is not None
    assert choice.strategy == "max_f1"
    truth = report.y_train == "malignant"
    oof = report.oof
    f1 = skm.f1_score(truth, oof >= choice.threshold)
    assert f1 == pytest.approx(choice.f1)
    # No other threshold on the out-of-fold predictions gives a higher F1.
    assert max(skm.f1_score(truth, oof >= t) for t in np.unique(oof)) == pytest.approx(f1)


def test_holdout_rows_never_reach_the_search_or_the_cross_validation(
    binary: tuple[TrainResult, Spied],
) -> None:
    result, spied = binary
    (holdout,) = spied.holdout
    holdout_rows = set(holdout.tolist())
    training_rows = set(range(360)) - holdout_rows
    assert len(holdout_rows) == result.report_data.n_test == 90
    assert len(spied.search_rows) == 2
    assert len(spied.cv_rows) == 2
    for rows in spied.search_rows + spied.cv_rows + spied.cv_test_rows:
        assert rows == training_rows


def test_the_model_is_logged_and_registered_as_challenger_with_its_tags(
    binary: tuple[TrainResult, Spied], cancer_project: LooplineConfig
) -> None:
    result, _ = binary
    tracker = Tracker(
        cancer_project.tracking, base_dir=cancer_project.project_dir, experiment="cancer-study"
    )
    registry = ModelRegistry(tracker)
    challenger = registry.challenger("cancer")
    assert challenger is not None
    assert challenger.version == result.model_version == "1"
    assert challenger.run_id == result.mlflow_run_id
    tags = challenger.tags
    assert tags["loopline.target"] == "diagnosis"
    assert tags["loopline.task"] == "binary"
    assert float(tags["loopline.threshold"]) == result.threshold
    assert tags["loopline.positive_class"] == "malignant"
    assert json.loads(tags["loopline.classes"]) == ["benign", "malignant"]
    assert tags["loopline.primary_metric"] == "roc_auc"
    assert json.loads(tags["loopline.holdout_metrics"]) == pytest.approx(result.holdout_metrics)
    lineage = json.loads(tags["loopline.lineage"])
    assert lineage["source"] == "table:cancer"
    assert lineage["rows"] == 360
    assert len(lineage["content_hash"]) == 64
    run = tracker.client.get_run(result.mlflow_run_id)
    assert run.data.tags["loopline.batch_ids"] == '["batch-1"]'
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(result.holdout_metrics["roc_auc"])
    assert run.data.metrics["cv_lightgbm_roc_auc_mean"] == pytest.approx(
        result.cv_summary["lightgbm"]["roc_auc"][0]
    )
    assert run.data.params["job.validation.folds"] == "3"
    history = tracker.client.get_metric_history(result.mlflow_run_id, "fold_roc_auc")
    assert sorted(m.step for m in history) == [0, 1, 2]
    artifacts = [a.path for a in tracker.client.list_artifacts(result.mlflow_run_id, "report")]
    assert artifacts == [f"report/{result.report_path.name}"]  # type: ignore[union-attr]
    # Loaded back from the registry, the model predicts what the in-memory one does.
    loaded = registry.load("cancer", alias="challenger")
    rows = cancer_frame().drop(columns="diagnosis")
    np.testing.assert_allclose(loaded.predict_proba(rows), result.model.predict_proba(rows))


def test_the_same_seed_gives_the_same_cross_validation(
    binary: tuple[TrainResult, Spied], cancer_project: LooplineConfig
) -> None:
    result, _ = binary
    job = TrainJobConfig.model_validate({**BINARY_JOB, "register_as": None})
    again = TrainingJob(cancer_project, "cancer", job).run()
    assert again.cv_summary == result.cv_summary
    assert again.threshold == result.threshold
    assert again.mlflow_run_id != result.mlflow_run_id


def test_a_regression_job_from_a_csv_file(tmp_path: Path) -> None:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    frame = X.iloc[:300].assign(progression=y[:300])
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    job = TrainJobConfig.model_validate(
        {
            "file": "diabetes.csv",
            "target": "progression",
            "search": {"method": "none"},
            "candidates": [{"name": "ridge"}, {"name": "lightgbm", "params": {"n_estimators": 40}}],
            "validation": {"folds": 3},
        }
    )
    result = TrainingJob(project(tmp_path), "diabetes", job).run()
    assert result.task == "regression"
    assert result.primary_metric == "rmse"
    rmse = {name: s["rmse"][0] for name, s in result.cv_summary.items()}
    assert result.best == min(rmse, key=rmse.__getitem__)  # lower is better
    report = result.report_data
    assert result.threshold is None
    assert report.calibration is None
    assert result.holdout_metrics["rmse"] == pytest.approx(
        skm.root_mean_squared_error(report.y_holdout, report.holdout_pred)
    )
    assert result.holdout_metrics["r2"] > 0.2
    assert result.model_name is None
    assert result.model_version is None


def test_a_log_target_job_searches_on_log_y_and_scores_on_the_original_scale(
    tmp_path: Path,
) -> None:
    from sklearn.compose import TransformedTargetRegressor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X.iloc[:240].assign(progression=y[:240]).to_parquet(tmp_path / "diabetes.parquet")
    job = TrainJobConfig.model_validate(
        {
            "file": "diabetes.parquet",
            "target": "progression",
            "target_transform": "log",
            "search": {"method": "random", "n_trials": 2, "inner_folds": 2},
            "candidates": [{"name": "ridge"}, {"name": "lightgbm", "params": {"n_estimators": 30}}],
            "validation": {"folds": 3},
        }
    )
    searched: list[np.ndarray] = []
    real_search = job_module.search

    def search(candidate: Any, task: Any, X: Any, y: Any, **kwargs: Any) -> Any:
        searched.append(np.asarray(y))
        return real_search(candidate, task, X, y, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job_module, "search", search)
        result = TrainingJob(project(tmp_path), "diabetes", job).run()
    report = result.report_data
    # The search saw log(y) of the training rows; everything scored sees y.
    assert len(searched) == 2
    np.testing.assert_allclose(searched[0], np.log(report.y_train))
    assert isinstance(result.model, TransformedTargetRegressor)
    features = X.iloc[:240]
    np.testing.assert_allclose(
        result.model.predict(features), np.exp(result.model.regressor_.predict(features))
    )
    # Holdout and CV metrics are on the original scale (progression 25-346, not its log).
    assert report.holdout_pred.mean() == pytest.approx(report.y_holdout.mean(), rel=0.25)
    assert result.holdout_metrics["rmse"] == pytest.approx(
        skm.root_mean_squared_error(report.y_holdout, report.holdout_pred)
    )
    assert 30 < result.cv_summary[result.best]["rmse"][0] < 100
    assert result.holdout_metrics["r2"] > 0.2


def test_a_log_target_transform_needs_a_positive_target(tmp_path: Path) -> None:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    frame = X.iloc[:60].assign(progression=y[:60] - 100)  # some at or below 0
    frame.to_parquet(tmp_path / "diabetes.parquet")
    job = TrainJobConfig.model_validate(
        {"file": "diabetes.parquet", "target": "progression", "target_transform": "log"}
    )
    with pytest.raises(TrainError, match="needs a target above 0") as info:
        TrainingJob(project(tmp_path), "diabetes", job).run()
    assert info.value.fields["column"] == "progression"
    assert info.value.fields["rows"] == int((frame["progression"] <= 0).sum())


def test_an_all_null_feature_is_dropped_and_the_run_goes_on(tmp_path: Path) -> None:
    frame = cancer_frame(200).assign(empty=None)
    frame.to_parquet(tmp_path / "cancer.parquet")
    job = TrainJobConfig.model_validate(
        {
            "file": "cancer.parquet",
            "target": "diagnosis",
            "candidates": [{"name": "logistic"}],
            "search": {"method": "none"},
            "validation": {"folds": 2},
        }
    )
    result = TrainingJob(project(tmp_path), "cancer", job).run()
    roles = {column: (role, why) for column, role, why in result.report_data.roles}
    assert roles["empty"] == ("dropped", "all null")
    assert "empty" not in result.model.feature_names_in_
    assert result.cv_summary["logistic"]["roc_auc"][0] > 0.9


def test_calibration_and_resampling_feed_the_threshold_and_the_shipped_model(
    tmp_path: Path,
) -> None:
    from sklearn.calibration import CalibratedClassifierCV

    cancer_frame(240).to_parquet(tmp_path / "cancer.parquet")
    job = TrainJobConfig.model_validate(
        {
            "file": "cancer.parquet",
            "target": "diagnosis",
            "candidates": [{"name": "lightgbm", "params": {"n_estimators": 30}}],
            "search": {"method": "none", "inner_folds": 2},
            "validation": {
                "folds": 3,
                "calibration": "sigmoid",
                "imbalance": {"resample": "random_over"},
                "threshold": {"strategy": "target_recall", "value": 0.9},
            },
        }
    )
    result = TrainingJob(project(tmp_path), "cancer", job).run()
    report = result.report_data
    assert isinstance(result.model, CalibratedClassifierCV)
    assert "resample" in result.model.calibrated_classifiers_[0].estimator.named_steps
    choice = report.threshold
    assert choice is not None
    assert choice.recall >= 0.9
    # The threshold was chosen on the calibrated out-of-fold probabilities the report holds.
    truth = report.y_train == report.positive_class
    assert skm.recall_score(truth, report.oof >= choice.threshold) == pytest.approx(choice.recall)
    assert report.calibration is not None
    assert report.calibration[2].sum() == report.n_test
    assert report.tree_contributions
    assert report.tree_contributions[0][1] > 0


def test_a_multiclass_job_scores_every_class(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame["species"] = np.array(["setosa", "versicolor", "virginica"])[frame.pop("target")]
    frame.to_csv(tmp_path / "iris.csv", index=False)
    job = TrainJobConfig.model_validate(
        {
            "file": "iris.csv",
            "target": "species",
            "candidates": [{"name": "logistic"}],
            "search": {"method": "none"},
            "validation": {"folds": 3},
            "register_as": "iris",
        }
    )
    result = TrainingJob(project(tmp_path), "iris", job).run()
    assert result.task == "multiclass"
    assert result.primary_metric == "f1_macro"
    assert result.threshold is None
    report = result.report_data
    assert report.holdout_pred.shape == (report.n_test, 3)
    predicted = np.asarray(report.classes)[report.holdout_pred.argmax(axis=1)]
    assert result.holdout_metrics["f1_macro"] == pytest.approx(
        skm.f1_score(report.y_holdout, predicted, average="macro")
    )
    assert result.holdout_metrics["roc_auc_ovr"] > 0.9
    tracker = Tracker(project(tmp_path).tracking, base_dir=tmp_path, experiment="cancer-study")
    tags = ModelRegistry(tracker).version("iris", result.model_version or "").tags
    assert json.loads(tags["loopline.classes"]) == ["setosa", "versicolor", "virginica"]
    assert tags["loopline.threshold"] == ""
    assert tags["loopline.positive_class"] == ""


def bad_job(tmp_path: Path, frame: pd.DataFrame, **extra: Any) -> TrainingJob:
    frame.to_csv(tmp_path / "rows.csv", index=False)
    spec = {"file": "rows.csv", "target": "diagnosis", **extra}
    return TrainingJob(project(tmp_path), "bad", TrainJobConfig.model_validate(spec))


def test_an_unknown_target_column_names_the_closest_column(tmp_path: Path) -> None:
    runner = bad_job(tmp_path, cancer_frame(50).rename(columns={"diagnosis": "diagnosys"}))
    with pytest.raises(TrainError, match="target column 'diagnosis' not found") as info:
        runner.run()
    assert info.value.fields["column"] == "diagnosis"
    assert "diagnosys" in str(info.value.hint)


def test_a_constant_target_is_a_train_error(tmp_path: Path) -> None:
    frame = cancer_frame(50).assign(diagnosis="benign")
    with pytest.raises(TrainError, match="1 distinct non-null value"):
        bad_job(tmp_path, frame).run()
    with pytest.raises(TrainError, match="single class"):
        bad_job(tmp_path, frame, task="binary").run()
    regression = cancer_frame(50).assign(diagnosis=3.5)
    with pytest.raises(TrainError, match="constant"):
        bad_job(tmp_path, regression, task="regression").run()


def test_a_class_too_rare_to_stratify_is_a_train_error(tmp_path: Path) -> None:
    frame = cancer_frame(50).assign(diagnosis=["benign"] * 49 + ["malignant"])
    with pytest.raises(TrainError, match="fewer than 2 rows") as info:
        bad_job(tmp_path, frame).run()
    assert info.value.hint


def test_a_candidate_that_cannot_serve_the_task_fails_before_training(tmp_path: Path) -> None:
    frame = cancer_frame(50)
    with pytest.raises(TrainError, match="linear regression cannot classify"):
        bad_job(tmp_path, frame, candidates=[{"name": "linear"}]).run()


def test_a_job_name_missing_from_the_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no training job named 'churn'"):
        TrainingJob(project(tmp_path), "churn")


@pytest.mark.slow
def test_telco_churn_logistic_reaches_the_published_roc_auc(tmp_path: Path) -> None:
    from loopline.datasets import load_frame

    load_frame("telco_churn").to_parquet(tmp_path / "telco.parquet")
    job = TrainJobConfig.model_validate(
        {
            "file": "telco.parquet",
            "target": "churn",
            "drop": ["rownames"],
            "candidates": [{"name": "logistic"}],
            "search": {"method": "none"},
            "validation": {"cv": "stratified", "folds": 5},
        }
    )
    result = TrainingJob(project(tmp_path), "churn", job).run()
    assert result.report_data.positive_class == "Yes"
    assert result.cv_summary["logistic"]["roc_auc"][0] >= 0.83
    assert result.holdout_metrics["roc_auc"] >= 0.82


@pytest.mark.slow
@pytest.mark.ray_cluster
def test_searching_on_a_local_ray_cluster_gives_the_sequential_result(
    binary: tuple[TrainResult, Spied], cancer_project: LooplineConfig
) -> None:
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    result, _ = binary
    job = TrainJobConfig.model_validate(
        {
            **BINARY_JOB,
            "register_as": None,
            "search": {**BINARY_JOB["search"], "ray_address": "local"},
        }
    )
    on_ray = TrainingJob(cancer_project, "cancer", job).run()
    assert not ray.is_initialized()  # the job stopped the cluster it started
    # Random search evaluates the same points on the same folds: identical outcome.
    assert on_ray.cv_summary == result.cv_summary
    assert on_ray.best == result.best
