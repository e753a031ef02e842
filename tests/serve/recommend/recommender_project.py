"""A served recommender project for the tests: a synthetic model, registered in MLflow.

:func:`synthetic_model` builds a small :class:`RecommenderModel` from arrays (no training);
:func:`register_recommender` logs and registers one the way training lays it out
(``artifacts/recommender/`` inside the registered model folder), so the server loads it with
``load_recommender``; :func:`make_recommender_project` writes ``loopline.yaml`` around it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import yaml

from loopline.config import TrackingConfig
from loopline.registry import ModelRegistry, VersionInfo
from loopline.store.tracking import Tracker
from loopline.train.recommender import RecommenderModel
from loopline.train.recommender.model import ARTIFACT_PATH

ITEMS = [f"i{n:02d}" for n in range(12)]
USERS = ["alice", "bob", "carol"]


def synthetic_model() -> RecommenderModel:
    """12 items on two axes (i00-i05 "action", i06-i11 "drama"), 3 users.

    alice likes action and saw i00, i01; bob likes drama and saw i06; carol saw nothing
    much (i11). Offline co-visitation: i06 and i07 both have i10 as their top neighbour.
    Popularity falls with the index (i00 most popular), i09 is never popular.
    """
    angle = np.linspace(0.0, np.pi / 2, len(ITEMS))
    item_factors = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    user_factors = np.array([[1.0, 0.05], [0.05, 1.0], [0.5, 0.5]], dtype=np.float32)
    seen = sp.csr_matrix(
        (np.full(4, 3.0, dtype=np.float32), ([0, 0, 1, 2], [0, 1, 6, 11])),
        shape=(len(USERS), len(ITEMS)),
    )
    neighbours = np.full((len(ITEMS), 2), -1, dtype=np.int32)
    scores = np.zeros((len(ITEMS), 2), dtype=np.float32)
    for source in (6, 7):
        neighbours[source] = [10, 8]
        scores[source] = [1.0, 0.1]
    popularity = np.arange(len(ITEMS), 0, -1, dtype=np.float32)
    popularity[9] = 0.0
    return RecommenderModel(
        users=np.array(USERS, dtype=object),
        items=np.array(ITEMS, dtype=object),
        user_factors=user_factors,
        item_factors=item_factors,
        neighbours=neighbours,
        neighbour_scores=scores,
        popularity=popularity,
        seen=seen,
        regularization=0.05,
        alpha=2.0,
    )


def register_recommender(
    registry: ModelRegistry, model: RecommenderModel, name: str, alias: str = "champion"
) -> VersionInfo:
    """Log ``model`` in a run, register it as a new version of ``name``, point ``alias`` at it."""
    with tempfile.TemporaryDirectory(prefix="loopline-test-rec-") as tmp:
        model.save(Path(tmp) / ARTIFACT_PATH)
        with registry.tracker.start_run(f"{name}-synthetic") as run:
            run.log_artifact(Path(tmp) / ARTIFACT_PATH, f"model/artifacts/{ARTIFACT_PATH}")
            run_id = run.run_id
    with registry.tracker.mlflow_scope():
        source = registry.tracker.client.get_run(run_id).info.artifact_uri + "/model"
    info = registry.register(name, source, run_id=run_id)
    registry.tracker.client.set_registered_model_alias(name, alias, info.version)
    return info


def make_recommender_project(
    folder: Path, serve: dict[str, Any], name: str = "movies"
) -> ModelRegistry:
    """Write ``loopline.yaml`` with ``serve`` and register :func:`synthetic_model` as ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loopline.yaml").write_text(yaml.safe_dump({"project": "shop", "serve": serve}))
    registry = ModelRegistry(Tracker(TrackingConfig(), base_dir=folder, experiment="shop"))
    register_recommender(registry, synthetic_model(), name)
    return registry
