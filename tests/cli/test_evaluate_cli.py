"""``loopline evaluate MODEL --on TABLE`` against a real MLflow SQLite store and warehouse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from typer.testing import CliRunner, Result

from loopline.cli.app import app
from loopline.config import TrackingConfig
from loopline.evaluate.model_tags import ModelTags
from loopline.registry import Gate, ModelRegistry
from loopline.store.tracking import Tracker
from loopline.store.warehouse import open_warehouse

pytest.importorskip("mlflow")

runner = CliRunner()
NULL_TARGETS = 6


def churn_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, rows)
    plan = rng.choice(["basic", "plus", "pro"], rows)
    logit = 1.5 - 0.08 * tenure + np.where(plan == "basic", 1.0, 0.0) + rng.normal(0, 1, rows)
    return pd.DataFrame(
        {
            "customer_id": [f"c{seed}-{i}" for i in range(rows)],
            "tenure": tenure,
            "plan": plan,
            "churned": np.where(logit > 0, "Yes", "No"),
        }
    )


class Project:
    """loopline.yaml, the table ``churn_q4`` (a few null targets) and model ``churn``:
    v1 champion (threshold 0.35), v2 challenger (the same pipeline, threshold 0.6)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "loopline.yaml").write_text("project: shop\n")
        registry = ModelRegistry(Tracker(TrackingConfig(), base_dir=folder, experiment="shop"))
        train = churn_frame(300, seed=1)
        features = train[["tenure", "plan"]]
        self.model: Any = make_pipeline(
            ColumnTransformer(
                [
                    ("num", StandardScaler(), ["tenure"]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                ]
            ),
            LogisticRegression(),
        ).fit(features, train["churned"])
        with registry.tracker.start_run("logistic") as run:
            uri = run.log_model(self.model, input_example=features.head(3))
        for threshold in (0.35, 0.6):
            info = registry.register("churn", uri, run_id=run.run_id)
            tags = ModelTags(
                target="churned",
                task="binary",
                primary_metric="roc_auc",
                threshold=threshold,
                positive_class="Yes",
                classes=["No", "Yes"],
            ).to_tags()
            for tag, value in tags.items():
                registry.tracker.client.set_model_version_tag("churn", info.version, tag, value)
        registry.promote("churn", gate=Gate("roc_auc"), metrics={"1": {"roc_auc": 0.8}}, version=1)
        registry.register("bare", uri, run_id=run.run_id)  # by hand: no loopline tags
        self.test = churn_frame(160, seed=2)
        stored = self.test.astype({"churned": object})
        stored.loc[: NULL_TARGETS - 1, "churned"] = None
        warehouse = open_warehouse("duckdb:///.loopline/warehouse.duckdb", base_dir=folder)
        try:
            warehouse.commit_batch(
                table="churn_q4",
                data=pa.Table.from_pandas(stored, preserve_index=False),
                mode="append",
                key=[],
                quarantine=None,
                job="q4",
                batch_id="b1",
                state=None,
            )
        finally:
            warehouse.close()

    def expected(self, threshold: float) -> dict[str, float]:
        kept = self.test.iloc[NULL_TARGETS:]
        proba = self.model.predict_proba(kept[["tenure", "plan"]])[:, 1]
        truth = kept["churned"] == "Yes"
        return {
            "roc_auc": skm.roc_auc_score(truth, proba),
            "f1": skm.f1_score(truth, proba >= threshold),
            "accuracy": skm.accuracy_score(truth, proba >= threshold),
        }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project(tmp_path_factory.mktemp("shop"))


@pytest.fixture(autouse=True)
def in_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.folder)


def invoke(*args: str) -> Result:
    return runner.invoke(app, ["evaluate", *args])


def test_champion_metrics_match_sklearn_at_its_threshold(project: Project) -> None:
    result = invoke("churn", "--on", "churn_q4", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["version"], payload["aliases"], payload["threshold"]) == (
        "1",
        ["champion"],
        0.35,
    )
    assert (payload["rows"], payload["dropped_null_target"]) == (160 - NULL_TARGETS, NULL_TARGETS)
    for metric, value in project.expected(0.35).items():
        assert payload["metrics"][metric] == pytest.approx(value), metric


def test_version_and_alias_pick_the_version_and_its_threshold(project: Project) -> None:
    by_version = json.loads(invoke("churn", "--on", "churn_q4", "--version", "2", "--json").stdout)
    by_alias = json.loads(
        invoke("churn", "--on", "churn_q4", "--alias", "challenger", "--json").stdout
    )
    assert by_version == by_alias
    assert (by_version["version"], by_version["threshold"]) == ("2", 0.6)
    assert by_version["metrics"]["f1"] == pytest.approx(project.expected(0.6)["f1"])
    assert by_version["metrics"]["f1"] != pytest.approx(project.expected(0.35)["f1"])


def test_the_table_output_names_the_metrics_and_the_dropped_rows(project: Project) -> None:
    result = invoke("churn", "--on", "churn_q4")
    assert result.exit_code == 0, result.output
    for text in ("roc_auc", "pr_auc", "brier", "dropped (null target)", "threshold: 0.35"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", "--on", "churn_q4"), "no registered model named 'nope'"),
        (("churn", "--on", "nope"), "no warehouse table named 'nope'"),
        (("churn", "--on", "churn_q4", "--alias", "staging"), "has no 'staging' version"),
        (("churn", "--on", "churn_q4", "--version", "9"), "could not read version 9"),
        (("bare", "--on", "churn_q4"), "has no 'champion' version"),
        (("bare", "--on", "churn_q4", "--version", "1"), "no loopline training tags"),
        (("churn", "--on", "churn_q4", "--alias", "x", "--version", "1"), "not both"),
    ],
)
def test_errors_are_one_red_line_without_a_traceback(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert message in lines[0]
