"""The whole recommender job on MovieLens: warehouse → split → fit → rank → MLflow → registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config import LooplineConfig, config_from_dict
from loopline.datasets import load_into_warehouse
from loopline.errors import ConfigError
from loopline.registry import Gate, ModelRegistry
from loopline.store.tracking import Tracker
from loopline.train.recommender.job import RecommenderJob, RecommenderResult
from loopline.train.recommender.model import load_recommender

pytest.importorskip("mlflow")
pytest.importorskip("implicit")

JOB = {
    "table": "movielens",
    "user": "userId",
    "item": "movieId",
    "rating": "rating",
    "factors": 32,
    "iterations": 10,
    "neighbours": 30,
    "register_as": "movies",
}


@dataclass
class Trained:
    config: LooplineConfig
    result: RecommenderResult
    registry: ModelRegistry


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One run of the job (each user's latest 20% held out), registered as ``movies``."""
    folder = tmp_path_factory.mktemp("films")
    config = config_from_dict(
        {"project": "films", "recommenders": {"movies": JOB}}, project_dir=folder, env={}
    )
    load_into_warehouse("movielens", config)
    result = RecommenderJob(config, "movies", split="user").run()
    tracker = Tracker(config.tracking, base_dir=folder, experiment="films")
    return Trained(config, result, ModelRegistry(tracker))


def test_every_strategy_is_scored_on_every_user(trained: Trained) -> None:
    result = trained.result

    assert list(result.metrics) == ["popular", "als", "covisit", "blend"]
    for values in result.metrics.values():
        assert set(values) == {"precision_at_10", "recall_at_10", "ndcg_at_10", "coverage"}
        assert all(0 <= v <= 1 for v in values.values())
    assert result.primary_metric == "ndcg_at_10"
    assert result.split["users_evaluated"] == 671
    assert result.split["train_interactions"] + result.split["test_interactions"] == 100_004


def test_als_and_the_blend_beat_popularity(trained: Trained) -> None:
    # Measured (32 factors, 10 iterations): NDCG@10 popular 0.086, als 0.132, blend 0.143.
    ndcg = {s: v["ndcg_at_10"] for s, v in trained.result.metrics.items()}
    coverage = {s: v["coverage"] for s, v in trained.result.metrics.items()}

    assert ndcg["als"] > 1.25 * ndcg["popular"]
    assert ndcg["blend"] > 1.35 * ndcg["popular"]
    assert ndcg["blend"] >= ndcg["als"]
    assert min(coverage["als"], coverage["covisit"], coverage["blend"]) > 5 * coverage["popular"]


def test_the_run_is_tracked_with_every_strategys_metrics(trained: Trained) -> None:
    client = trained.registry.tracker.client
    run = client.get_run(trained.result.mlflow_run_id)

    assert run.info.status == "FINISHED"
    assert run.data.metrics["als_ndcg_at_10"] == pytest.approx(
        trained.result.metrics["als"]["ndcg_at_10"]
    )
    assert "popular_coverage" in run.data.metrics
    assert run.data.metrics["split_users_evaluated"] == 671
    assert run.data.params["factors"] == "32"
    assert run.data.params["split"] == "user"
    assert run.data.tags["loopline.task"] == "recommendation"


def test_the_registered_version_carries_the_ranking_tags(trained: Trained) -> None:
    version = trained.registry.version("movies", trained.result.model_version or "")

    assert version.version == "1"
    assert "challenger" in version.aliases
    assert version.tags["loopline.task"] == "recommendation"
    assert version.tags["loopline.primary_metric"] == "ndcg_at_10"
    holdout = json.loads(version.tags["loopline.holdout_metrics"])
    assert holdout["ndcg_at_10"] == trained.result.metrics["blend"]["ndcg_at_10"]
    assert holdout["popular_ndcg_at_10"] == trained.result.metrics["popular"]["ndcg_at_10"]
    assert json.loads(version.tags["loopline.lineage"])["rows"] == 100_004


def test_load_recommender_reads_back_the_trained_arrays(trained: Trained) -> None:
    model, version = load_recommender(trained.registry, "movies", "challenger")
    original = trained.result.model

    assert version.version == "1"
    assert model.items.tolist() == original.items.tolist()
    assert np.array_equal(model.item_factors, original.item_factors)
    assert np.array_equal(model.neighbours, original.neighbours)
    assert (model.seen != original.seen).nnz == 0
    assert model.metadata["params"]["factors"] == 32


def test_the_holdout_tags_gate_a_promotion(trained: Trained) -> None:
    registry = trained.registry
    challenger = registry.challenger("movies")
    assert challenger is not None

    def holdout(info: object) -> dict[str, float]:
        scores: dict[str, float] = json.loads(info.tags["loopline.holdout_metrics"])  # type: ignore[attr-defined]
        return scores

    decision = registry.promote("movies", gate=Gate("ndcg_at_10"), evaluate=holdout)

    assert decision.to_version == "1"
    _, version = load_recommender(registry, "movies")
    assert version.version == "1"
    assert "champion" in version.aliases


def test_the_mlflow_pyfunc_model_recommends(trained: Trained) -> None:
    import mlflow

    tracker = trained.registry.tracker
    user = str(trained.result.model.users[0])
    with tracker.mlflow_scope():
        pyfunc = mlflow.pyfunc.load_model("models:/movies/1")
        out = pyfunc.predict(
            pd.DataFrame({"user": [user, "nobody"]}), params={"k": 5, "strategy": "als"}
        )

    assert out["user"].tolist() == [user, "nobody"]
    assert len(out["items"][0]) == 5
    assert list(out["items"][1]) == []


def test_an_unknown_job_is_a_config_error(trained: Trained) -> None:
    with pytest.raises(ConfigError, match="no recommender job named 'films'"):
        RecommenderJob(trained.config, "films")


def test_the_job_needs_its_table(tmp_path: Path) -> None:
    from loopline.errors import TrainError

    config = config_from_dict({"recommenders": {"movies": JOB}}, project_dir=tmp_path, env={})
    with pytest.raises(TrainError, match="not in the warehouse"):
        RecommenderJob(config, "movies").run()
