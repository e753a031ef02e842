"""``loopline recommender train NAME`` on MovieLens: the metric table, JSON, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from loopline.cli.recommender import recommender

pytest.importorskip("mlflow")
pytest.importorskip("implicit")

runner = CliRunner()

PROJECT = """\
project: films
recommenders:
  movies:
    table: movielens
    user: userId
    item: movieId
    rating: rating
    factors: 8
    iterations: 3
    neighbours: 10
    register_as: movies
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("films")
    (folder / "loopline.yaml").write_text(PROJECT)
    return folder


def invoke(folder: Path, *args: str) -> Result:
    return runner.invoke(recommender, ["train", *args, "--config", str(folder / "loopline.yaml")])


@pytest.fixture(scope="module")
def first_run(project: Path) -> dict[str, object]:
    """``--dataset movielens --json``: loads the table, trains, registers version 1."""
    result = invoke(project, "movies", "--dataset", "movielens", "--json")
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.output)
    return payload


def test_json_has_every_strategys_metrics_and_the_version(first_run: dict[str, object]) -> None:
    metrics = first_run["metrics"]
    assert isinstance(metrics, dict)
    assert list(metrics) == ["popular", "als", "covisit", "blend"]
    assert set(metrics["als"]) == {"precision_at_10", "recall_at_10", "ndcg_at_10", "coverage"}
    assert first_run["primary_metric"] == "ndcg_at_10"
    assert (first_run["model_name"], first_run["model_version"]) == ("movies", "1")
    split = first_run["split"]
    assert isinstance(split, dict)
    assert split["mode"] == "user"  # the job's default
    assert split["interactions"] == 100_004


def test_the_table_shows_the_baseline_beside_the_models(
    project: Path, first_run: dict[str, object]
) -> None:
    result = invoke(project, "movies", "--split", "global")

    assert result.exit_code == 0, result.output
    out = result.output
    assert "held-out users (global temporal split)" in out
    assert "popular (baseline)" in out
    for word in ("als", "covisit", "blend", "ndcg_at_10", "precision_at_10", "coverage"):
        assert word in out
    assert "registered: movies v2 (alias challenger" in out
    assert "trained movies in" in out


def test_errors_are_one_line_and_exit_1(project: Path) -> None:
    unknown = invoke(project, "shows")
    assert unknown.exit_code == 1
    assert "no recommender job named 'shows' (jobs: movies)" in unknown.output

    bad_split = invoke(project, "movies", "--split", "random")
    assert bad_split.exit_code == 1
    assert "--split must be 'global' or 'user'" in bad_split.output
