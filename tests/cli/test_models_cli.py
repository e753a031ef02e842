"""``loopline models ...`` against a real MLflow SQLite store in a project folder."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics as skm
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner, Result

from loopline.cli.app import app
from loopline.config import TrackingConfig
from loopline.evaluate.model_tags import ModelTags
from loopline.registry import ModelRegistry
from loopline.store.tracking import Tracker
from loopline.store.warehouse import open_warehouse

pytest.importorskip("mlflow")

runner = CliRunner()
FEATURES = ["tenure", "charges"]


def churn_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, rows)
    charges = rng.normal(70, 20, rows)
    churned = (1.5 - 0.08 * tenure + 0.02 * (charges - 70) + rng.normal(0, 1, rows)) > 0
    return pd.DataFrame({"tenure": tenure, "charges": charges, "churned": churned.astype(int)})


class Project:
    """A project folder: loopline.yaml, a warehouse table ``churn_test``, two logged models."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "loopline.yaml").write_text("project: shop\n")
        self.registry = ModelRegistry(Tracker(TrackingConfig(), base_dir=folder, experiment="shop"))
        train = churn_frame(300, seed=1)
        self.test = churn_frame(150, seed=2)
        self.logged: dict[str, tuple[str, str, Any]] = {}
        for key, model in {
            "good": LogisticRegression(),
            "constant": DummyClassifier(strategy="prior"),
        }.items():
            model.fit(train[FEATURES], train["churned"])
            with self.registry.tracker.start_run(key) as run:
                uri = run.log_model(model, input_example=train[FEATURES].head(3))
            self.logged[key] = (uri, run.run_id, model)
        warehouse = open_warehouse("duckdb:///.loopline/warehouse.duckdb", base_dir=folder)
        try:
            warehouse.commit_batch(
                table="churn_test",
                data=pa.Table.from_pandas(self.test, preserve_index=False),
                mode="append",
                key=[],
                quarantine=None,
                job="test",
                batch_id="b1",
                state=None,
            )
        finally:
            warehouse.close()

    def register(self, name: str, key: str, **holdout: float) -> str:
        """Register a logged model as a new version of ``name`` with loopline tags."""
        uri, run_id, _ = self.logged[key]
        info = self.registry.register(name, uri, run_id=run_id)
        tags = ModelTags(
            target="churned",
            task="binary",
            primary_metric="roc_auc",
            threshold=0.4,
            positive_class="1",
            classes=[0, 1],
            holdout_metrics=holdout,
        ).to_tags()
        for tag, value in tags.items():
            self.registry.tracker.client.set_model_version_tag(name, info.version, tag, value)
        return info.version

    def auc(self, key: str) -> float:
        model = self.logged[key][2]
        proba = model.predict_proba(self.test[FEATURES])[:, 1]
        return float(skm.roc_auc_score(self.test["churned"], proba))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project(tmp_path_factory.mktemp("shop"))


@pytest.fixture(autouse=True)
def in_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.folder)
    monkeypatch.setenv("USER", "tester")


@pytest.fixture
def name() -> str:
    return f"churn-{uuid.uuid4().hex[:8]}"


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def assert_one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert text in lines[0]


def test_list_shows_versions_aliases_and_the_last_event(project: Project, name: str) -> None:
    project.register(name, "good", roc_auc=0.8)
    project.register(name, "constant", roc_auc=0.5)
    result = invoke("models", "list", "--json")
    assert result.exit_code == 0, result.output
    (row,) = [m for m in json.loads(result.stdout) if m["name"] == name]
    assert row["versions"] == ["1", "2"]
    assert (row["champion"], row["challenger"]) == (None, "2")
    assert row["last_event"]["action"] == "register"
    assert row["last_event"]["to_version"] == "2"
    text = invoke("models", "list")
    assert text.exit_code == 0, text.output
    assert "registered models" in text.stdout


def test_first_promotion_passes_and_a_worse_challenger_is_rejected_on_the_same_table(
    project: Project, name: str
) -> None:
    project.register(name, "good")
    first = invoke("models", "promote", name, "--on", "churn_test", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["promoted"] is True
    project.register(name, "constant")
    result = invoke("models", "promote", name, "--on", "churn_test", "--actor", "ana")
    assert result.exit_code == 1
    assert "failed the promotion gate" in result.stderr
    good, constant = project.auc("good"), project.auc("constant")
    assert constant == pytest.approx(0.5)
    assert f"{good:.4f}" in result.stdout
    assert f"{constant:.4f}" in result.stdout
    assert project.registry.champion(name).version == "1"  # type: ignore[union-attr]
    events = json.loads(invoke("models", "history", name, "--json").stdout)
    assert [e["action"] for e in events] == ["register", "promote", "register", "reject"]
    assert (events[-1]["actor"], events[1]["actor"]) == ("ana", "tester")
    assert events[-1]["metrics"]["challenger.roc_auc"] == pytest.approx(constant)
    assert events[-1]["metrics"]["champion.roc_auc"] == pytest.approx(good)


def test_rejection_as_json_carries_both_scores(project: Project, name: str) -> None:
    project.register(name, "good")
    invoke("models", "promote", name, "--on", "churn_test")
    project.register(name, "constant")
    result = invoke("models", "promote", name, "--on", "churn_test", "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["promoted"] is False
    assert payload["scores"]["2"]["roc_auc"] == pytest.approx(project.auc("constant"))
    assert payload["scores"]["1"]["roc_auc"] == pytest.approx(project.auc("good"))


def test_holdout_tags_are_the_default_and_max_regression_is_the_tolerance(
    project: Project, name: str
) -> None:
    project.register(name, "good", roc_auc=0.800)
    assert invoke("models", "promote", name).exit_code == 0
    project.register(name, "good", roc_auc=0.797)
    strict = invoke("models", "promote", name)
    assert strict.exit_code == 1
    assert "0.797 vs champion 0.8" in strict.stderr
    loose = invoke("models", "promote", name, "--max-regression", "0.005", "--reason", "retrain")
    assert loose.exit_code == 0, loose.output
    assert "promoted" in loose.stdout
    assert project.registry.champion(name).version == "2"  # type: ignore[union-attr]
    assert json.loads(invoke("models", "history", name, "--json").stdout)[-1]["reason"] == (
        "retrain"
    )


def test_lower_is_better_flips_the_gate_of_a_custom_metric(project: Project, name: str) -> None:
    project.register(name, "good", cost=10.0)
    assert invoke("models", "promote", name, "--metric", "cost", "--lower-is-better").exit_code == 0
    project.register(name, "good", cost=12.0)
    unknown = invoke("models", "promote", name, "--metric", "cost")
    assert_one_line_error(unknown, "unknown metric 'cost'")
    worse = invoke("models", "promote", name, "--metric", "cost", "--lower-is-better")
    assert worse.exit_code == 1
    assert "lower is better" in worse.stderr
    higher = invoke("models", "promote", name, "--metric", "cost", "--higher-is-better")
    assert higher.exit_code == 0, higher.output


def test_rollback_moves_the_champion_back_and_is_in_the_history(
    project: Project, name: str
) -> None:
    project.register(name, "good", roc_auc=0.8)
    invoke("models", "promote", name)
    project.register(name, "good", roc_auc=0.82)
    invoke("models", "promote", name)
    result = invoke("models", "rollback", name, "--reason", "precision complaints")
    assert result.exit_code == 0, result.output
    assert "v2 → v1" in result.stdout
    assert project.registry.champion(name).version == "1"  # type: ignore[union-attr]
    history = invoke("models", "history", name)
    assert history.exit_code == 0, history.output
    assert "rollback" in history.stdout
    last = json.loads(invoke("models", "history", name, "--json").stdout)[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("rollback", "2", "1")
    assert (last["reason"], last["actor"]) == ("precision complaints", "tester")
    again = invoke("models", "rollback", name, "--reason", "again")
    assert_one_line_error(again, "no previous champion")


def test_rollback_needs_a_reason(project: Project, name: str) -> None:
    result = invoke("models", "rollback", name)
    assert result.exit_code == 2
    assert "--reason" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("models", "promote", "nope"),
        ("models", "rollback", "nope", "--reason", "x"),
        ("models", "history", "nope"),
    ],
)
def test_an_unknown_model_is_one_red_line(args: tuple[str, ...]) -> None:
    assert_one_line_error(invoke(*args), "no registered model named 'nope'")


def test_promote_without_a_challenger_or_tags_is_one_red_line(project: Project, name: str) -> None:
    project.register(name, "good", roc_auc=0.8)
    invoke("models", "promote", name)
    assert_one_line_error(invoke("models", "promote", name), "has no 'challenger' version")
    uri, run_id, _ = project.logged["good"]
    project.registry.register(name, uri, run_id=run_id)  # by hand: no loopline tags
    assert_one_line_error(invoke("models", "promote", name), "no loopline training tags")


def test_history_text_shows_the_gate_scores_and_keeps_brackets_in_reasons(
    project: Project, name: str
) -> None:
    project.register(name, "good", roc_auc=0.8, pr_auc=0.7)
    assert invoke("models", "promote", name, "--reason", "[p1]").exit_code == 0
    result = invoke("models", "history", name)
    assert result.exit_code == 0, result.output
    assert "[p1]" in result.stdout
    assert "roc_auc 0.8000" in result.stdout
    assert "pr_auc" not in result.stdout
