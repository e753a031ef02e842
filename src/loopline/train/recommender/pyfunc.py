"""The recommender as an MLflow model: a small pyfunc wrapper around the saved arrays.

MLflow registers models, so the trained :class:`RecommenderModel` is logged as a
``python_function`` model whose only artifact is the folder :meth:`RecommenderModel.save`
writes (``artifacts/recommender/``). loopline itself never unpickles the wrapper:
:func:`~loopline.train.recommender.model.load_recommender` downloads the artifacts and reads
the arrays. The wrapper is for MLflow's own tools (``mlflow.pyfunc.load_model``,
``mlflow models serve``): ``predict`` takes a frame with a ``user`` column (and optional
``k`` and ``strategy``) and returns each known user's top items.

Example (not run here: it needs a tracking store)::

    uri = log_recommender(run, model)   # models:/m-... of the run
    registry.register("movies", uri, run_id=run.run_id)
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopline.store.tracking import import_mlflow, quiet_mlflow, store_errors
from loopline.train.recommender.model import ARTIFACT_PATH, RecommenderModel, no_progress_bars
from loopline.train.recommender.strategies import STRATEGIES, Strategy, recommend

if TYPE_CHECKING:
    from loopline.store.tracking import TrackedRun

__all__ = ["RecommenderPyfunc", "log_recommender"]

with quiet_mlflow():  # importing mlflow.pyfunc warns about MLflow's own type hints
    import_mlflow()  # telemetry off before MLflow loads
    from mlflow.pyfunc import PythonModel  # type: ignore[attr-defined]

_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "implicit", "loopline")


class RecommenderPyfunc(PythonModel):  # type: ignore[misc]  # untyped base
    """``mlflow.pyfunc`` face of a :class:`RecommenderModel` (see the module docstring)."""

    model: RecommenderModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = RecommenderModel.load(Path(context.artifacts[ARTIFACT_PATH]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One row per input row: ``user``, ``items`` (top-k ids; empty for an unknown user)."""
        if self.model is None:
            self.load_context(context)
        assert self.model is not None
        frame = pd.DataFrame(model_input)
        k = int((params or {}).get("k", frame["k"].iloc[0] if "k" in frame else 10))
        strategy = str((params or {}).get("strategy", "blend"))
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")
        return recommend_frame(self.model, frame["user"].astype(str).tolist(), k, strategy)  # type: ignore[arg-type]


def recommend_frame(
    model: RecommenderModel, users: list[str], k: int, strategy: Strategy
) -> pd.DataFrame:
    """Top-``k`` item ids per user (a user unknown to the model gets an empty list).

    >>> recommend_frame(RecommenderModel.example(), ["u1", "x"], 2, "als")["items"].tolist()
    [['d', 'c'], []]
    """
    found = [model.user_index(u) for u in users]
    known = np.array([i for i in found if i is not None], dtype=np.int64)
    ranked = recommend(model, known, strategy, k=k) if known.size else np.empty((0, k))
    rows = iter(ranked)
    items = [
        [] if i is None else [str(model.items[j]) for j in next(rows) if j >= 0] for i in found
    ]
    return pd.DataFrame({"user": users, "items": items})


def _requirements() -> list[str]:
    pinned = []
    for dist in _REQUIREMENTS:
        try:
            pinned.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pinned


_MODEL_CODE = """\
# The MLflow model of a loopline recommender (models from code: no pickle).
import mlflow.models

from loopline.train.recommender.pyfunc import RecommenderPyfunc

mlflow.models.set_model(RecommenderPyfunc())
"""


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user")]),
        outputs=Schema([ColSpec("string", "user"), ColSpec(Array("string"), "items")]),
        params=ParamSchema([ParamSpec("k", "long", 10), ParamSpec("strategy", "string", "blend")]),
    )


def log_recommender(run: TrackedRun, model: RecommenderModel, *, name: str = "model") -> str:
    """Log ``model`` into ``run`` as an MLflow pyfunc model; returns its ``models:/`` URI.

    The wrapper is logged as code (MLflow's "models from code"), the arrays as the
    artifact folder ``recommender``: nothing is pickled.
    """
    mlflow = import_mlflow()
    tracker = run.tracker
    with tempfile.TemporaryDirectory(prefix="loopline-recommender-") as tmp:
        folder = Path(tmp) / ARTIFACT_PATH
        model.save(folder)
        code = Path(tmp) / "recommender_model.py"
        code.write_text(_MODEL_CODE)
        with (
            tracker.mlflow_scope(),
            no_progress_bars(),
            store_errors(f"log model {name}", tracker.tracking_uri),
        ):
            logged = tracker.client.create_logged_model(
                tracker.experiment_id, name=name, source_run_id=run.run_id
            )
            info = mlflow.models.Model.log(
                artifact_path=None,
                flavor=mlflow.pyfunc,
                name=name,
                run_id=run.run_id,
                model_id=logged.model_id,
                python_model=str(code),
                artifacts={ARTIFACT_PATH: str(folder)},
                signature=_signature(),
                pip_requirements=_requirements(),
            )
            tracker.client.finalize_logged_model(logged.model_id, "READY")
    return str(info.model_uri)
