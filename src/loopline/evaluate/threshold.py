"""Decision thresholds for binary models: precision-recall points, cost curves, a choice.

A row is predicted positive when ``proba >= threshold`` (the same rule ``score_all`` uses).
The candidate thresholds are the distinct predicted probabilities; the cost strategy also
considers "predict nothing positive" (a threshold just above the highest probability).

Choose the threshold on out-of-fold predictions from cross-validation
(``CVResult.oof[CVResult.covered]``), never on the test set: a threshold tuned on the rows
that later measure the model makes the reported precision / recall optimistic.

Strategies (``ThresholdConfig.strategy``):

- ``max_f1``: the threshold with the highest F1 (the highest such threshold on ties);
- ``target_recall``: the highest threshold whose recall is at least ``value``;
- ``target_precision``: the lowest threshold whose precision is at least ``value``;
- ``cost``: the threshold minimising ``cost_fp * FP + cost_fn * FN``;
- ``fixed``: ``value`` itself.

>>> from loopline.config.training import ThresholdConfig
>>> y, p = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8]
>>> choose_threshold(y, p, ThresholdConfig(strategy="target_recall", value=1.0)).threshold
0.4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loopline.config.training import ThresholdConfig
from loopline.errors import EvaluationError

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it gives on the data it was chosen on."""

    threshold: float
    precision: float
    recall: float
    f1: float
    cost: float
    strategy: str = "max_f1"


@dataclass(frozen=True)
class PRPoints:
    """Precision, recall and F1 at each threshold (ascending); ``proba >= t`` is positive."""

    thresholds: FloatArray
    precision: FloatArray
    recall: FloatArray
    f1: FloatArray


@dataclass(frozen=True)
class CostCurve:
    """Misclassification cost at each threshold (ascending)."""

    thresholds: FloatArray
    cost: FloatArray
    false_positives: NDArray[np.int64]
    false_negatives: NDArray[np.int64]


def precision_recall_points(y_true: ArrayLike, proba: ArrayLike, *, pos_label: Any = 1) -> PRPoints:
    """Precision / recall / F1 at every distinct probability (scikit-learn's
    ``precision_recall_curve`` points, without its final recall-0 anchor)."""
    positive, scores = _binary_inputs(y_true, proba, pos_label)
    thresholds = np.unique(scores)
    tp, fp, fn = _counts(positive, scores, thresholds)
    precision, recall, f1 = _rates(tp, fp, fn)
    return PRPoints(thresholds, precision, recall, f1)


def cost_curve(
    y_true: ArrayLike,
    proba: ArrayLike,
    *,
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
    pos_label: Any = 1,
) -> CostCurve:
    """``cost_fp * FP + cost_fn * FN`` at every distinct probability, plus the point just
    above the highest one (nothing predicted positive)."""
    if cost_fp < 0 or cost_fn < 0:
        raise EvaluationError(
            "costs must be non-negative", cost_fp=cost_fp, cost_fn=cost_fn, hint="e.g. 1 and 5"
        )
    positive, scores = _binary_inputs(y_true, proba, pos_label)
    thresholds = _with_none_positive(np.unique(scores))
    _, fp, fn = _counts(positive, scores, thresholds)
    return CostCurve(thresholds, cost_fp * fp + cost_fn * fn, fp, fn)


def choose_threshold(
    y_true: ArrayLike, proba: ArrayLike, config: ThresholdConfig, *, pos_label: Any = 1
) -> ThresholdChoice:
    """Choose a threshold by ``config.strategy`` (see the module docstring)."""
    positive, scores = _binary_inputs(y_true, proba, pos_label)
    strategy = config.strategy
    if strategy == "fixed":
        assert config.value is not None  # ThresholdConfig guarantees it
        thresholds = np.array([config.value])
    elif strategy == "cost":
        thresholds = _with_none_positive(np.unique(scores))
    else:
        thresholds = np.unique(scores)
    tp, fp, fn = _counts(positive, scores, thresholds)
    precision, recall, f1 = _rates(tp, fp, fn)
    cost = config.cost_fp * fp + config.cost_fn * fn
    if strategy == "max_f1":
        at = _last(f1 == f1.max())
    elif strategy == "target_recall":
        assert config.value is not None
        at = _last(recall >= config.value)
    elif strategy == "target_precision":
        assert config.value is not None
        reaching = np.flatnonzero(precision >= config.value)
        if reaching.size == 0:
            raise EvaluationError(
                f"no threshold reaches precision {config.value}",
                best_precision=round(float(precision.max()), 4),
                hint="lower the target precision or improve the model",
            )
        at = int(reaching[0])
    elif strategy == "cost":
        at = int(np.argmin(cost))
    else:
        at = 0
    return ThresholdChoice(
        threshold=float(thresholds[at]),
        precision=float(precision[at]),
        recall=float(recall[at]),
        f1=float(f1[at]),
        cost=float(cost[at]),
        strategy=strategy,
    )


def _binary_inputs(
    y_true: ArrayLike, proba: ArrayLike, pos_label: Any
) -> tuple[NDArray[np.bool_], FloatArray]:
    truth = np.asarray(y_true)
    scores = np.asarray(proba, dtype=float)
    if truth.ndim != 1 or scores.shape != truth.shape:
        raise EvaluationError(
            "y_true and proba must be 1-D and of the same length",
            y_true_shape=truth.shape,
            proba_shape=scores.shape,
            hint="pass the positive-class probability (predict_proba(X)[:, 1])",
        )
    if not np.isfinite(scores).all():
        raise EvaluationError(
            "proba holds NaN or inf",
            hint="use out-of-fold predictions of covered rows: result.oof[result.covered]",
        )
    if np.unique(truth).size > 2:
        raise EvaluationError("thresholds apply to binary targets", classes=np.unique(truth).size)
    positive = truth == pos_label
    if positive.all() or not positive.any():
        raise EvaluationError(
            "choosing a threshold needs both classes in y_true",
            pos_label=pos_label,
            positives=int(positive.sum()),
            rows=int(truth.size),
            hint="check pos_label matches the positive class of y_true",
        )
    return positive, scores


def _with_none_positive(thresholds: FloatArray) -> FloatArray:
    return np.append(thresholds, np.nextafter(thresholds[-1], np.inf))


def _counts(
    positive: NDArray[np.bool_], scores: FloatArray, thresholds: FloatArray
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """TP, FP, FN at each threshold, vectorised with sorted scores."""
    pos_scores = np.sort(scores[positive])
    neg_scores = np.sort(scores[~positive])
    tp = pos_scores.size - np.searchsorted(pos_scores, thresholds, side="left")
    fp = neg_scores.size - np.searchsorted(neg_scores, thresholds, side="left")
    fn = pos_scores.size - tp
    return tp.astype(np.int64), fp.astype(np.int64), fn.astype(np.int64)


def _rates(
    tp: NDArray[np.int64], fp: NDArray[np.int64], fn: NDArray[np.int64]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision, recall, F1; precision is 0 where nothing is predicted positive."""
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros(tp.shape), where=predicted > 0)
    recall = tp / (tp + fn)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(tp.shape), where=both > 0)
    return precision, recall, f1


def _last(mask: NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[-1])
