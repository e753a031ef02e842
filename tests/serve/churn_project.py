"""A served project for the serving tests: loopline.yaml, an MLflow store, two churn versions.

:func:`make_churn_project` trains two small scikit-learn pipelines (numeric + categorical
columns, one-hot, logistic regression) on synthetic churn rows, logs them with their MLflow
signature and an input example the way training does, registers them as versions 1 and 2 of
``churn`` with the ``loopline.*`` tags, and points ``champion`` at 1 and ``challenger`` at 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from loopline.config import LooplineConfig, TrackingConfig, load_config
from loopline.evaluate.model_tags import ModelTags
from loopline.registry import ModelRegistry
from loopline.store.tracking import Tracker

MODEL = "churn"
FEATURES = ["tenure", "charges", "contract", "seats"]
THRESHOLD = 0.4


def churn_frame(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic churn rows: ``tenure`` / ``charges`` float, ``contract`` text, ``seats`` int."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, rows)
    charges = rng.normal(70, 20, rows)
    contract = rng.choice(["monthly", "yearly", "two_year"], rows)
    seats = rng.integers(1, 10, rows)
    logit = 1.5 - 0.08 * tenure + 0.02 * (charges - 70) + (contract == "monthly") * 1.0
    churned = (logit + rng.normal(0, 1, rows)) > 0
    return pd.DataFrame(
        {
            "tenure": tenure,
            "charges": charges,
            "contract": contract,
            "seats": seats,
            "churned": np.where(churned, "Yes", "No"),
        }
    )


def churn_pipeline(c: float) -> Pipeline:
    pre = ColumnTransformer(
        [
            ("numeric", StandardScaler(), ["tenure", "charges", "seats"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["contract"]),
        ]
    )
    return Pipeline([("preprocess", pre), ("model", LogisticRegression(C=c))])


@dataclass
class ChurnProject:
    folder: Path
    registry: ModelRegistry
    models: dict[str, Any] = field(default_factory=dict)  # version -> fitted pipeline
    test: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def config(self) -> LooplineConfig:
        return load_config(self.folder)

    def rows(self, n: int = 1) -> list[dict[str, Any]]:
        """``n`` valid request rows (JSON-ready)."""
        frame = self.test[FEATURES].head(n)
        return [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")
        ]


def make_churn_project(folder: Path, serve: dict[str, Any] | None = None) -> ChurnProject:
    """Write ``loopline.yaml`` (``serve:`` defaults to serving ``churn``) and register two
    versions of ``churn``: 1 (champion) and 2 (challenger, a different C)."""
    folder.mkdir(parents=True, exist_ok=True)
    serve = serve if serve is not None else {"models": [{"name": MODEL}]}
    (folder / "loopline.yaml").write_text(yaml.safe_dump({"project": "shop", "serve": serve}))
    registry = ModelRegistry(Tracker(TrackingConfig(), base_dir=folder, experiment="shop"))
    train = churn_frame(400, seed=1)
    project = ChurnProject(folder, registry, test=churn_frame(200, seed=2))
    for c in (1.0, 0.01):
        model = churn_pipeline(c).fit(train[FEATURES], train["churned"])
        sample = train[FEATURES].head(50)
        with registry.tracker.start_run(f"churn-C{c}") as run:
            uri = run.log_model(
                model, signature_from=(sample, model.predict(sample)), input_example=sample.head(5)
            )
        info = registry.register(MODEL, uri, run_id=run.run_id)
        tags = ModelTags(
            target="churned",
            task="binary",
            primary_metric="roc_auc",
            threshold=THRESHOLD,
            positive_class="Yes",
            classes=["No", "Yes"],
            holdout_metrics={"roc_auc": 0.8},
        ).to_tags()
        for tag, value in tags.items():
            registry.tracker.client.set_model_version_tag(MODEL, info.version, tag, value)
        project.models[info.version] = model
    registry.tracker.client.set_registered_model_alias(MODEL, "champion", "1")
    return project
