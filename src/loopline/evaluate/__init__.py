"""Validation of trained models: metrics, splits, cross-validation, thresholds, comparison,
calibration and permutation importance. Never imports ``loopline.train``.

>>> from loopline.evaluate import primary_metric
>>> primary_metric("regression")
'rmse'
"""

from loopline.evaluate.calibration import calibrate, reliability_curve
from loopline.evaluate.comparison import (
    ComparisonRow,
    TTestResult,
    compare_models,
    corrected_resampled_ttest,
)
from loopline.evaluate.cross_validation import CVResult, FoldResult, cross_validate
from loopline.evaluate.importance import FeatureImportance, permutation_importances
from loopline.evaluate.metrics import (
    confusion,
    greater_is_better,
    primary_metric,
    score_all,
    sklearn_scoring,
)
from loopline.evaluate.splits import Splitter, cv_splitter, holdout_split
from loopline.evaluate.threshold import (
    CostCurve,
    PRPoints,
    ThresholdChoice,
    choose_threshold,
    cost_curve,
    precision_recall_points,
)

__all__ = [
    "CVResult",
    "ComparisonRow",
    "CostCurve",
    "FeatureImportance",
    "FoldResult",
    "PRPoints",
    "Splitter",
    "TTestResult",
    "ThresholdChoice",
    "calibrate",
    "choose_threshold",
    "compare_models",
    "confusion",
    "corrected_resampled_ttest",
    "cost_curve",
    "cross_validate",
    "cv_splitter",
    "greater_is_better",
    "holdout_split",
    "permutation_importances",
    "precision_recall_points",
    "primary_metric",
    "reliability_curve",
    "score_all",
    "sklearn_scoring",
]
