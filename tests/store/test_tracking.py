"""The MLflow glue against a real SQLite tracking store in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loopline.config import TrackingConfig
from loopline.errors import ConfigError, StoreError
from loopline.store.tracking import TrackedRun, Tracker, pip_requirements, resolve_tracking_uri

mlflow = pytest.importorskip("mlflow")
sklearn_linear = pytest.importorskip("sklearn.linear_model")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="module")
def tracker(project: Path) -> Tracker:
    """One store for the module: creating MLflow's tables takes seconds."""
    return Tracker(TrackingConfig(), base_dir=project, experiment="churn")


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(120, 4)), columns=["tenure", "charges", "age", "calls"])
    target = frame["tenure"] + 0.5 * frame["calls"] + rng.normal(scale=0.5, size=120) > 0
    return frame, target.astype(int).to_numpy()


@pytest.fixture(scope="module")
def fitted(data: tuple[pd.DataFrame, np.ndarray]) -> Any:
    frame, target = data
    return sklearn_linear.LogisticRegression().fit(frame, target)


def test_relative_sqlite_uri_and_artifacts_resolve_against_the_project_folder(
    tracker: Tracker, project: Path
) -> None:
    assert tracker.tracking_uri == f"sqlite:///{(project / '.loopline/mlflow.db').resolve()}"
    assert (project / ".loopline" / "mlflow.db").is_file()
    assert tracker.artifact_root == (project / ".loopline" / "mlartifacts").resolve().as_uri()
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.name == "churn"
    assert experiment.artifact_location == tracker.artifact_root


def test_a_run_logs_params_metrics_per_fold_values_tags_and_artifacts(
    tracker: Tracker, tmp_path: Path
) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    with tracker.start_run("lightgbm", tags={"job": "churn"}) as run:
        run.log_params({"learning_rate": 0.05, "num_leaves": 31})
        run.log_fold_metrics([{"fold": 0, "roc_auc": 0.84, "model": "x"}, {"roc_auc": 0.86}])
        run.log_metrics({"roc_auc": 0.85, "pr_auc": 0.66})
        run.set_tags({"rows": 7043})
        run.log_artifact(report)
        run.log_text('{"table": "churn"}', "lineage.json")

    stored = tracker.client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.run_name == "lightgbm"
    assert stored.data.params == {"learning_rate": "0.05", "num_leaves": "31"}
    assert stored.data.metrics == {"roc_auc": 0.85, "pr_auc": 0.66, "fold_roc_auc": 0.86}
    assert stored.data.tags["job"] == "churn"
    assert stored.data.tags["rows"] == "7043"
    history = tracker.client.get_metric_history(run.run_id, "fold_roc_auc")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.84), (1, 0.86)]
    names = {a.path for a in tracker.client.list_artifacts(run.run_id)}
    assert names == {"report.html", "lineage.json"}
    local = Path(tracker.client.download_artifacts(run.run_id, "lineage.json", str(tmp_path)))
    assert local.read_text() == '{"table": "churn"}'


def test_a_failing_block_marks_the_run_failed(tracker: Tracker) -> None:
    opened: list[TrackedRun] = []

    def train() -> None:
        with tracker.start_run("broken") as run:
            opened.append(run)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train()
    assert tracker.client.get_run(opened[0].run_id).info.status == "FAILED"


def test_a_logged_model_loads_back_with_its_signature_and_predicts_the_same(
    tracker: Tracker, fitted: Any, data: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    frame, _ = data
    with tracker.start_run("logistic") as run:
        model_uri = run.log_model(
            fitted,
            signature_from=(frame.head(20), fitted.predict_proba(frame.head(20))[:, 1]),
            input_example=frame.head(3),
        )
    loaded = tracker.load_model(model_uri)
    np.testing.assert_array_equal(loaded.predict_proba(frame), fitted.predict_proba(frame))

    with tracker.mlflow_scope():
        info = mlflow.models.get_model_info(model_uri)
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path)))
    assert info.signature.inputs.input_names() == ["tenure", "charges", "age", "calls"]
    assert info.run_id == run.run_id
    requirements = (local / "requirements.txt").read_text().split()
    sklearn_version = __import__("sklearn").__version__
    assert f"scikit-learn=={sklearn_version}" in requirements
    assert (local / "input_example.json").is_file()
    assert info.artifact_path.startswith(f"{tracker.artifact_root}/models/")


def test_tracking_does_not_leak_the_store_into_mlflow_globals(tracker: Tracker) -> None:
    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    with tracker.mlflow_scope():
        assert mlflow.get_tracking_uri() == tracker.tracking_uri
        assert mlflow.get_registry_uri() == tracker.tracking_uri
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before


def test_two_projects_in_one_process_keep_their_runs_apart(
    tracker: Tracker, tmp_path: Path
) -> None:
    other = Tracker(TrackingConfig(), base_dir=tmp_path, experiment="churn")
    with other.start_run("elsewhere") as run:
        run.log_metrics({"rmse": 0.12})
    assert other.tracking_uri != tracker.tracking_uri
    assert [r.info.run_name for r in other.client.search_runs([other.experiment_id])] == [
        "elsewhere"
    ]
    mine = tracker.client.search_runs([tracker.experiment_id])
    assert "elsewhere" not in {r.info.run_name for r in mine}


def test_server_urls_are_used_as_given_and_unknown_schemes_are_config_errors() -> None:
    assert resolve_tracking_uri("http://mlflow:5000", Path("/x")) == "http://mlflow:5000"
    with pytest.raises(ConfigError, match="unsupported MLflow tracking URI") as caught:
        resolve_tracking_uri("ftp://host/mlflow", Path("/x"))
    assert caught.value.fields["path"] == "tracking.uri"


def test_logging_a_missing_file_is_a_store_error(tracker: Tracker, tmp_path: Path) -> None:
    with tracker.start_run("missing") as run, pytest.raises(StoreError) as caught:
        run.log_artifact(tmp_path / "nope.html")
    assert caught.value.fields["path"].endswith("nope.html")
    assert caught.value.hint


def test_pip_requirements_pin_installed_versions_of_every_library_in_the_model() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    pipeline = pytest.importorskip("sklearn.pipeline").make_pipeline(
        pytest.importorskip("sklearn.preprocessing").StandardScaler(),
        lightgbm.LGBMClassifier(),
    )
    pins = dict(r.split("==") for r in pip_requirements(pipeline))
    assert pins["lightgbm"] == lightgbm.__version__
    assert pins["mlflow"] == mlflow.__version__
    assert "xgboost" not in pins


def test_a_model_skops_cannot_hold_is_stored_with_cloudpickle_and_still_loads(
    tracker: Tracker, data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, target = data
    pipeline_module = pytest.importorskip("sklearn.pipeline")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    model = pipeline_module.make_pipeline(
        preprocessing.FunctionTransformer(lambda x: x * 2.0),
        sklearn_linear.LogisticRegression(),
    ).fit(frame, target)
    with tracker.start_run("lambda") as run:
        model_uri = run.log_model(
            model, signature_from=(frame.head(5), model.predict(frame.head(5)))
        )
    with tracker.mlflow_scope():
        flavour = mlflow.models.get_model_info(model_uri).flavors["sklearn"]
    assert flavour["serialization_format"] == "cloudpickle"
    loaded = tracker.load_model(model_uri)
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
