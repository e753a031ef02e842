"""What a training run hands to its HTML report: one plain record, no model objects.

The training job (``loopline.train``) fills a :class:`TrainReportData`; the report
(:mod:`loopline.evaluate.report`) only reads it, so either side can change without the other.
Arrays are NumPy; probabilities are of the positive class for binary tasks, one column per
class for multiclass, predicted values for regression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loopline.config.training import Task
from loopline.evaluate.comparison import ComparisonRow
from loopline.evaluate.cross_validation import CVResult
from loopline.evaluate.importance import FeatureImportance
from loopline.evaluate.threshold import ThresholdChoice


@dataclass
class CandidateOutcome:
    """One candidate: its searched parameters and its outer cross-validation."""

    name: str
    best_params: dict[str, Any]
    cv: CVResult
    trials: int
    search_seconds: float


@dataclass
class Projection:
    """A 2-D view of the transformed training rows: exploration only, never part of a model."""

    method: str
    points: NDArray[np.float64]
    labels: NDArray[Any]


@dataclass
class TrainReportData:
    """Everything the report shows about one training run."""

    job: str
    task: Task
    target: str
    data_source: str
    rows: int
    n_train: int
    n_test: int
    primary_metric: str
    candidates: list[CandidateOutcome]
    comparison: list[ComparisonRow]
    best: str
    y_train: NDArray[Any]
    oof: NDArray[np.float64]
    y_holdout: NDArray[Any]
    holdout_pred: NDArray[Any]
    holdout_metrics: dict[str, float]
    classes: list[Any] = field(default_factory=list)
    positive_class: Any = None
    roles: list[tuple[str, str, str]] = field(default_factory=list)
    threshold: ThresholdChoice | None = None
    calibration: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]] | None = None
    importances: list[FeatureImportance] = field(default_factory=list)
    tree_contributions: list[tuple[str, float]] = field(default_factory=list)
    projection: Projection | None = None
    more_projections: list[Projection] = field(default_factory=list)
    mlflow_run_id: str | None = None
    model_version: str | None = None
    notes: list[str] = field(default_factory=list)
    costs: tuple[float, float] | None = None
    """``(cost_fp, cost_fn)`` of the threshold config: set it to draw the cost curve."""
