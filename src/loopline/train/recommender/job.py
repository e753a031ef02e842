"""``loopline recommender train``: fit, evaluate, track and register a recommender.

One run of a :class:`~loopline.config.serving.RecommenderJobConfig` (``recommenders:`` in
``loopline.yaml``):

1. read the positive interactions from the warehouse table (:func:`read_interactions`);
2. split them by time (:func:`temporal_split`): the model only ever sees the earlier part;
3. fit the parts of a :class:`RecommenderModel` on it: ALS factors (``implicit``,
   confidence ``1 + alpha * weight``), co-visitation neighbours, popularity;
4. rank the held-out users' items with each strategy (``popular``, ``als``, ``covisit``,
   ``blend``), already-seen items excluded, and score precision@k, recall@k, NDCG@k and
   catalogue coverage (:mod:`loopline.evaluate.ranking`), the popularity baseline beside
   the models in the same run;
5. in one MLflow run: parameters, every strategy's metrics (``als_ndcg_at_10`` ...), the
   split sizes, the model as a pyfunc model with its arrays as artifacts; with
   ``register_as``, a new registered version (alias ``challenger``) tagged
   ``loopline.task=recommendation``, ``loopline.primary_metric=ndcg_at_<k>`` and
   ``loopline.holdout_metrics`` (the ``blend`` strategy's metrics, which the server uses by
   default, plus every strategy's under its prefix).

The registered model is the one that was evaluated (trained on the earlier part), as for
``loopline train``; the server folds live events in on top of it.

Example (not run here: it needs a project with the table loaded)::

    result = RecommenderJob(config, "movies").run()
    result.metrics["als"]["ndcg_at_10"], result.model_version
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopline.config import LooplineConfig
from loopline.config.serving import RecommenderJobConfig
from loopline.errors import ConfigError, TrainError
from loopline.evaluate.ranking import ranking_metrics
from loopline.train.recommender.als import fit_als
from loopline.train.recommender.covisitation import DEFAULT_WINDOW, covisitation
from loopline.train.recommender.data import (
    Interactions,
    SplitMode,
    TemporalSplit,
    read_interactions,
    temporal_split,
)
from loopline.train.recommender.model import (
    DEFAULT_RECENCY_DECAY,
    DEFAULT_RECENT_ITEMS,
    DEFAULT_SESSION_WEIGHT,
    RecommenderModel,
)
from loopline.train.recommender.strategies import STRATEGIES, recent_history, recommend

__all__ = [
    "TASK",
    "RecommenderJob",
    "RecommenderResult",
    "evaluate_strategies",
    "fit_recommender",
    "holdout_metrics",
    "split_summary",
]

log = logging.getLogger(__name__)

TASK = "recommendation"
"""The ``loopline.task`` tag of a registered recommender."""
BLENDED = "blend"
"""The strategy whose metrics are the version's unprefixed holdout metrics (the default
strategy of the server's recommender)."""

Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class RecommenderResult:
    """What a recommender training run measured and where it went.

    ``metrics``: strategy → metric → value (``precision_at_10``, ``recall_at_10``,
    ``ndcg_at_10``, ``coverage``); ``split``: how the interactions were divided.
    """

    job: str
    metrics: dict[str, dict[str, float]]
    primary_metric: str
    split: dict[str, Any]
    mlflow_run_id: str
    model_name: str | None
    model_version: str | None
    duration_s: float
    model: RecommenderModel = field(repr=False)

    @property
    def holdout_metrics(self) -> dict[str, float]:
        """The registered ``loopline.holdout_metrics`` (see :func:`holdout_metrics`)."""
        return holdout_metrics(self.metrics)


def holdout_metrics(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """One flat dict: the ``blend`` strategy's metrics (what the gate of ``models promote``
    reads), then every strategy's as ``<strategy>_<metric>``.

    >>> holdout_metrics({"blend": {"ndcg_at_10": 0.2}, "popular": {"ndcg_at_10": 0.1}})
    {'ndcg_at_10': 0.2, 'blend_ndcg_at_10': 0.2, 'popular_ndcg_at_10': 0.1}
    """
    flat = dict(metrics[BLENDED])
    for strategy, values in metrics.items():
        flat |= {f"{strategy}_{m}": v for m, v in values.items()}
    return flat


def fit_recommender(
    train: Interactions,
    spec: RecommenderJobConfig,
    *,
    window: int = DEFAULT_WINDOW,
    metadata: dict[str, Any] | None = None,
) -> RecommenderModel:
    """ALS factors, co-visitation neighbours and popularity of ``train``, as one model."""
    weights = train.matrix()
    confidence = weights.copy()
    confidence.data = 1.0 + spec.alpha * confidence.data
    user_factors, item_factors = fit_als(
        confidence,
        factors=spec.factors,
        regularization=spec.regularization,
        iterations=spec.iterations,
        seed=spec.seed,
    )
    neighbours, scores = covisitation(train, window=window, neighbours=spec.neighbours)
    popularity = np.bincount(train.item, minlength=len(train.items)).astype(np.float32)
    return RecommenderModel(
        users=train.users,
        items=train.items,
        user_factors=user_factors,
        item_factors=item_factors,
        neighbours=neighbours,
        neighbour_scores=scores,
        popularity=popularity,
        seen=confidence.astype(np.float32).tocsr(),
        regularization=spec.regularization,
        alpha=spec.alpha,
        metadata=dict(metadata or {}),
    )


def evaluate_strategies(
    model: RecommenderModel,
    split: TemporalSplit,
    *,
    k: int,
    recent: int = DEFAULT_RECENT_ITEMS,
    session_weight: float = DEFAULT_SESSION_WEIGHT,
) -> dict[str, dict[str, float]]:
    """Ranking metrics of every strategy on the held-out users of ``split``.

    Co-visitation (alone and in the blend) starts from each user's ``recent`` latest
    training items, weighted by recency.
    """
    if split.test_users.size == 0:
        raise TrainError(
            "no user has interactions on both sides of the temporal split",
            hint="hold out a larger share (test_fraction), or split per user",
        )
    train = split.train
    history = recent_history(
        train.user,
        train.item,
        (len(train.users), len(train.items)),
        recent=recent,
        decay=DEFAULT_RECENCY_DECAY,
    )[split.test_users]
    results: dict[str, dict[str, float]] = {}
    for strategy in STRATEGIES:
        ranked = recommend(
            model, split.test_users, strategy, k=k, history=history, session_weight=session_weight
        )
        results[strategy] = ranking_metrics(ranked, split.relevant, k=k, n_items=len(model.items))
    return results


class RecommenderJob:
    """One recommender training job of ``loopline.yaml`` (see the module docstring).

    ``split``: ``global`` (one cutoff time) or ``user`` (each user's latest interactions);
    ``window``: co-visitation window. Progress goes to ``on_progress(event, payload)``:
    ``data``, ``split``, ``fitted``, ``evaluated``, ``logged``, ``registered``.
    """

    def __init__(
        self,
        config: LooplineConfig,
        name: str,
        spec: RecommenderJobConfig | None = None,
        *,
        split: SplitMode | None = None,
        window: int | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        if spec is None:
            if name not in config.recommenders:
                jobs = ", ".join(sorted(config.recommenders)) or "none"
                raise ConfigError(
                    f"no recommender job named {name!r} (jobs: {jobs})",
                    path=f"recommenders.{name}",
                    hint="declare it under 'recommenders:' in loopline.yaml",
                )
            spec = config.recommenders[name]
        self.config = config
        self.name = name
        self.spec = spec
        self.split_mode: SplitMode = split or spec.split
        self.window = window or spec.window
        self._on_progress = on_progress

    def _progress(self, event: str, **payload: Any) -> None:
        if self._on_progress is not None:
            self._on_progress(event, payload)

    def run(self) -> RecommenderResult:
        """Read, split, fit, evaluate, track and (with ``register_as``) register."""
        started = time.perf_counter()
        spec = self.spec
        data, lineage = read_interactions(self.config, spec)
        self._progress("data", **lineage)
        split = temporal_split(data, spec.test_fraction, self.split_mode)
        summary = split_summary(data, split)
        self._progress("split", **summary)
        model = fit_recommender(
            split.train, spec, window=self.window, metadata=self._metadata(summary, lineage)
        )
        self._progress("fitted", users=len(model.users), items=len(model.items))
        metrics = evaluate_strategies(model, split, k=spec.k)
        model.metadata["metrics"] = metrics
        self._progress("evaluated", metrics=metrics)
        primary = f"ndcg_at_{spec.k}"
        run_id, version = self._publish(model, metrics, summary, lineage, primary)
        return RecommenderResult(
            job=self.name,
            metrics=metrics,
            primary_metric=primary,
            split=summary,
            mlflow_run_id=run_id,
            model_name=spec.register_as,
            model_version=version,
            duration_s=time.perf_counter() - started,
            model=model,
        )

    def _metadata(self, summary: dict[str, Any], lineage: dict[str, Any]) -> dict[str, Any]:
        return {
            "job": self.name,
            "params": self.params(),
            "split": summary,
            "lineage": lineage,
        }

    def params(self) -> dict[str, Any]:
        """The job's parameters as logged (config, split mode, window, blend settings)."""
        return self.spec.model_dump(mode="json") | {
            "split": self.split_mode,
            "covisit_window": self.window,
            "recent_items": DEFAULT_RECENT_ITEMS,
            "recency_decay": DEFAULT_RECENCY_DECAY,
            "session_weight": DEFAULT_SESSION_WEIGHT,
        }

    def _publish(
        self,
        model: RecommenderModel,
        metrics: dict[str, dict[str, float]],
        summary: dict[str, Any],
        lineage: dict[str, Any],
        primary: str,
    ) -> tuple[str, str | None]:
        from loopline.registry import ModelRegistry
        from loopline.store.tracking import Tracker
        from loopline.train.recommender.pyfunc import log_recommender

        cfg, spec = self.config, self.spec
        tracker = Tracker(
            cfg.tracking,
            base_dir=cfg.project_dir,
            experiment=cfg.tracking.experiment or cfg.project,
        )
        flat = {f"{s}_{m}": v for s, values in metrics.items() for m, v in values.items()}
        with tracker.start_run(
            f"{self.name}-recommender", tags={"loopline.job": self.name, "loopline.task": TASK}
        ) as run:
            run.log_params({k: v for k, v in self.params().items() if v is not None})
            sizes = {
                f"split_{k}": v
                for k, v in summary.items()
                if isinstance(v, int | float) and k != "cutoff"
            }
            run.log_metrics(flat | sizes)
            run.set_tags({f"loopline.{k}": v for k, v in lineage.items()})
            run.log_text(
                json.dumps({"metrics": metrics, "split": summary}, indent=2), "ranking.json"
            )
            model_uri = log_recommender(run, model)
            self._progress("logged", run_id=run.run_id, model_uri=model_uri)
            if spec.register_as is None:
                return run.run_id, None
            tags = {
                "loopline.task": TASK,
                "loopline.primary_metric": primary,
                "loopline.holdout_metrics": json.dumps(holdout_metrics(metrics)),
                "loopline.lineage": json.dumps(lineage),
                "loopline.split": json.dumps(summary),
            }
            info = ModelRegistry(tracker).register(
                spec.register_as,
                model_uri,
                run_id=run.run_id,
                description=f"recommender job {self.name}: ALS {spec.factors} factors, "
                f"co-visitation top {spec.neighbours}, {summary['users_evaluated']} test users",
                tags=tags,
            )
            self._progress("registered", name=info.name, version=info.version)
            return run.run_id, info.version


def split_summary(data: Interactions, split: TemporalSplit) -> dict[str, Any]:
    """Sizes of a split, for the run's metrics and the CLI."""
    return {
        "mode": split.mode,
        "interactions": len(data),
        "train_interactions": len(split.train),
        "test_interactions": split.n_test,
        "cutoff": split.cutoff,
        "dropped_cold": split.dropped_cold,
        "users": len(split.train.users),
        "items": len(split.train.items),
        "users_evaluated": int(split.test_users.size),
        "relevant_items": int(sum(r.size for r in split.relevant)),
    }
