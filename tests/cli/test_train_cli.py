"""``loopline train JOB`` on a tiny project: a CSV file, a real MLflow SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner, Result

from loopline.cli.app import app
from loopline.config import TrackingConfig
from loopline.registry import ModelRegistry
from loopline.store.tracking import Tracker

pytest.importorskip("mlflow")

runner = CliRunner()

PROJECT = """\
project: cancer-study
train:
  cancer:
    file: data/cancer.csv
    target: diagnosis
    drop: [patient_id]
    candidates: [{name: logistic}, {name: decision_tree, params: {max_depth: 3}}]
    search: {method: none, inner_folds: 2}
    validation: {folds: 3, holdout: 0.25}
    register_as: cancer
  misspelt:
    file: data/cancer.csv
    target: diagnosys
    search: {method: none}
"""


def write_project(folder: Path) -> None:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    frame = X.iloc[:240, :6].copy()
    frame.insert(0, "patient_id", np.arange(1000, 1000 + len(frame)))
    frame["diagnosis"] = np.where(y[:240] == 1, "benign", "malignant")
    (folder / "data").mkdir()
    frame.to_csv(folder / "data" / "cancer.csv", index=False)
    (folder / "loopline.yaml").write_text(PROJECT)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cancer")
    write_project(folder)
    return folder


def invoke(folder: Path, *args: str) -> Result:
    return runner.invoke(app, ["train", *args, "--config", str(folder / "loopline.yaml")])


@pytest.fixture(scope="module")
def text_run(project: Path) -> Result:
    return invoke(project, "cancer")


@pytest.fixture(scope="module")
def json_run(project: Path, text_run: Result) -> dict[str, Any]:
    result = invoke(project, "cancer", "--json")
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def registry(folder: Path) -> ModelRegistry:
    return ModelRegistry(Tracker(TrackingConfig(), base_dir=folder, experiment="cancer-study"))


def test_train_prints_roles_comparison_holdout_threshold_and_report(text_run: Result) -> None:
    assert text_run.exit_code == 0, text_run.output
    out = text_run.stdout
    for heading in ("feature roles", "3-fold cross-validation", "p vs best", "holdout: 60 rows"):
        assert heading in out
    assert "patient_id" in out
    assert "dropped by the job" in out
    assert "logistic" in out
    assert "decision_tree" in out
    assert "threshold:" in out
    assert "registered: cancer v1 (alias challenger" in out
    report = Path(out.split("report:")[1].split()[0])
    assert report.is_file()
    assert report.suffix == ".html"
    assert "<svg" in report.read_text()


def test_json_reports_the_run_and_the_registered_challenger(
    project: Path, json_run: dict[str, Any]
) -> None:
    assert json_run["job"] == "cancer"
    assert json_run["task"] == "binary"
    assert json_run["primary_metric"] == "roc_auc"
    summary = json_run["cv_summary"]
    assert set(summary) == {"logistic", "decision_tree"}
    means = {name: metrics["roc_auc"]["mean"] for name, metrics in summary.items()}
    assert json_run["best"] == max(means, key=means.__getitem__)
    assert json_run["comparison"][0]["candidate"] == json_run["best"]
    assert json_run["comparison"][0]["p_value"] == 1.0
    assert 0.0 < json_run["threshold"] < 1.0
    assert 0.5 < json_run["holdout_metrics"]["roc_auc"] <= 1.0
    assert Path(json_run["report_path"]).is_file()
    # The second run registered version 2, now the challenger, from the run it names.
    assert (json_run["model_name"], json_run["model_version"]) == ("cancer", "2")
    challenger = registry(project).challenger("cancer")
    assert challenger is not None
    assert (challenger.version, challenger.run_id) == ("2", json_run["mlflow_run_id"])


def test_text_and_json_show_the_same_seeded_cv_scores(
    text_run: Result, json_run: dict[str, Any]
) -> None:
    best = json_run["cv_summary"][json_run["best"]]["roc_auc"]
    assert f"{best['mean']:.4f} ±{best['std']:.4f}" in text_run.stdout


def test_unknown_job_lists_the_jobs(project: Path) -> None:
    result = invoke(project, "churn")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert "no training job named 'churn'" in result.stderr
    assert "jobs: cancer, misspelt" in result.stderr


def test_bad_target_is_one_red_line_without_traceback(project: Path) -> None:
    result = invoke(project, "misspelt", "--json")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error:")
    assert result.stderr.strip().count("\n") == 0
    assert "diagnosys" in result.stderr
    assert "diagnosis" in result.stderr


def test_ray_address_overrides_the_job_search(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # 'auto' with no cluster running: the job tried Ray, so the option reached its search.
    result = invoke(project, "cancer", "--ray-address", "auto")
    assert result.exit_code == 1, result.output
    assert "cannot connect to Ray" in result.stderr
    assert "address=auto" in result.stderr
