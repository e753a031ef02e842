"""Every metric of a task in one call, computed by scikit-learn's reference functions.

``score_all`` is the one place that turns predictions into numbers, so cross-validation,
holdout evaluation, reports and the promotion gate all agree on what "roc_auc" means.

Rules:

- Classification takes ``y_proba`` (probabilities) or ``y_pred`` (labels), not both.
  With probabilities, the label metrics use ``proba >= threshold`` on the positive class
  (binary) or the most probable class (multiclass); with labels only, the probability
  metrics (roc_auc, pr_auc, log_loss, brier, roc_auc_ovr) are left out.
- ``labels`` fixes the class order: ``labels[1]`` is the positive class of a binary task and
  the columns of a multiclass ``y_proba`` follow ``labels``. Default: the sorted classes of
  ``y_true`` (so 0/1 → 1 is positive, "No"/"Yes" → "Yes").
- A metric that cannot be computed raises :class:`EvaluationError` naming it (e.g. roc_auc
  when ``y_true`` holds one class). Nothing returns NaN: a NaN would silently poison a
  cross-validation mean, a model comparison or a promotion gate.
- ``rmsle`` is reported only when ``y_true`` and ``y_pred`` are all ≥ 0 (the log is undefined
  otherwise) and is silently omitted else; ``mape`` follows scikit-learn (huge where y = 0).

>>> scores = score_all("binary", [0, 1, 1, 0], y_proba=[0.2, 0.7, 0.4, 0.1])
>>> scores["roc_auc"], scores["recall"]
(1.0, 0.5)
>>> primary_metric("binary", positive_rate=0.1), greater_is_better("rmse")
('pr_auc', False)
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn import metrics as skm

from loopline.config.training import Task
from loopline.errors import EvaluationError

REGRESSION_METRICS = ("mse", "rmse", "mae", "r2", "mape", "rmsle")
BINARY_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "mcc",
    "balanced_accuracy",
)
MULTICLASS_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_weighted",
    "precision_macro",
    "recall_macro",
    "roc_auc_ovr",
    "log_loss",
)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "regression": REGRESSION_METRICS,
    "binary": BINARY_METRICS,
    "multiclass": MULTICLASS_METRICS,
}
LOWER_IS_BETTER = frozenset({"mse", "rmse", "mae", "mape", "rmsle", "log_loss", "brier"})
RANKING_METRIC = re.compile(r"(\w+_)?((precision|recall|ndcg)_at_\d+|coverage)")
"""Ranking metrics of a recommender (``ndcg_at_10``, ``als_recall_at_10``, ``coverage``):
all higher is better."""
RARE_POSITIVE_RATE = 0.2
"""Below this positive share, PR-AUC is the primary metric of a binary task."""

SKLEARN_SCORING: dict[str, str] = {
    "mse": "neg_mean_squared_error",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
    "mape": "neg_mean_absolute_percentage_error",
    "rmsle": "neg_root_mean_squared_log_error",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
    "roc_auc": "roc_auc",
    "pr_auc": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "mcc": "matthews_corrcoef",
    "balanced_accuracy": "balanced_accuracy",
    "f1_macro": "f1_macro",
    "f1_weighted": "f1_weighted",
    "precision_macro": "precision_macro",
    "recall_macro": "recall_macro",
    "roc_auc_ovr": "roc_auc_ovr",
}
"""loopline metric name → scikit-learn scorer name (searches, permutation importance)."""

_PROBA_HINT = "use stratified cross-validation or fewer folds so every class is in each test fold"


def score_all(
    task: Task,
    y_true: ArrayLike,
    y_pred: ArrayLike | None = None,
    y_proba: ArrayLike | None = None,
    *,
    threshold: float = 0.5,
    labels: ArrayLike | None = None,
) -> dict[str, float]:
    """All metrics of ``task`` (see the module docstring for the rules).

    >>> score_all("regression", [1.0, 2.0, 3.0], y_pred=[1.0, 2.0, 4.0])["mae"]
    0.3333333333333333
    """
    truth = np.asarray(y_true)
    if truth.ndim != 1 or truth.size == 0:
        raise EvaluationError(
            "y_true must be a non-empty 1-D array", shape=truth.shape, hint="pass one target column"
        )
    if task == "regression":
        if y_pred is None or y_proba is not None:
            raise EvaluationError(
                "regression needs y_pred (predicted values) and no y_proba", task=task
            )
        return _regression(truth.astype(float), _aligned(y_pred, truth, "y_pred").astype(float))
    if task not in ("binary", "multiclass"):
        raise EvaluationError(
            f"unknown task {task!r}", hint="use 'binary', 'multiclass' or 'regression'"
        )
    if (y_pred is None) == (y_proba is None):
        raise EvaluationError(
            f"{task} needs exactly one of y_pred (labels) or y_proba (probabilities)",
            hint="pass y_proba to get every metric at your threshold",
        )
    classes = np.unique(truth) if labels is None else np.asarray(labels)
    if task == "binary":
        return _binary(truth, y_pred, y_proba, classes, threshold)
    return _multiclass(truth, y_pred, y_proba, classes)


def confusion(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike) -> list[list[int]]:
    """The confusion matrix as plain ints: rows are true labels, columns predicted, both in
    ``labels`` order.

    >>> confusion([0, 1, 1, 0], [0, 1, 0, 0], labels=[0, 1])
    [[2, 0], [1, 1]]
    """
    matrix = skm.confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=labels)
    return [[int(v) for v in row] for row in matrix]


def primary_metric(task: Task, positive_rate: float | None = None) -> str:
    """The metric reported first and optimised by default.

    Regression → rmse; binary → pr_auc when the positive class is rare (share below 20%),
    else roc_auc; multiclass → f1_macro.

    >>> primary_metric("binary", 0.35), primary_metric("multiclass")
    ('roc_auc', 'f1_macro')
    """
    if task == "regression":
        return "rmse"
    if task == "multiclass":
        return "f1_macro"
    if task == "binary":
        if positive_rate is None or not 0.0 <= positive_rate <= 1.0:
            raise EvaluationError(
                "a binary task needs the positive class share to pick its primary metric",
                positive_rate=positive_rate,
                hint="pass positive_rate=mean(y == positive class), a number in [0, 1]",
            )
        return "pr_auc" if positive_rate < RARE_POSITIVE_RATE else "roc_auc"
    raise EvaluationError(
        f"unknown task {task!r}", hint="use 'binary', 'multiclass' or 'regression'"
    )


def greater_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` is better (False for errors and losses).

    >>> greater_is_better("ndcg_at_10"), greater_is_better("als_coverage")
    (True, True)
    """
    if RANKING_METRIC.fullmatch(metric):
        return True
    _check_known(metric)
    return metric not in LOWER_IS_BETTER


def sklearn_scoring(metric: str) -> str:
    """The scikit-learn scorer name of a loopline metric (``pr_auc`` → ``average_precision``).

    >>> sklearn_scoring("rmse")
    'neg_root_mean_squared_error'
    """
    _check_known(metric)
    return SKLEARN_SCORING[metric]


def _check_known(metric: str) -> None:
    if metric not in SKLEARN_SCORING:
        raise EvaluationError(
            f"unknown metric {metric!r}",
            metric=metric,
            hint=f"use one of {sorted(SKLEARN_SCORING)}",
        )


def _aligned(values: ArrayLike, truth: NDArray[Any], name: str) -> NDArray[Any]:
    array = np.asarray(values)
    if array.shape[0] != truth.shape[0]:
        raise EvaluationError(
            f"{name} has {array.shape[0]} rows but y_true has {truth.shape[0]}",
            hint="predict on exactly the rows of y_true",
        )
    return array


def _regression(truth: NDArray[np.float64], pred: NDArray[np.float64]) -> dict[str, float]:
    if pred.ndim != 1:
        raise EvaluationError("y_pred must be 1-D for regression", shape=pred.shape)
    if not (np.isfinite(truth).all() and np.isfinite(pred).all()):
        raise EvaluationError(
            "regression metrics need finite y_true and y_pred", hint="drop or impute NaN / inf"
        )
    if truth.size < 2:
        raise EvaluationError("r2 needs at least two rows", metric="r2", rows=int(truth.size))
    scores = {
        "mse": skm.mean_squared_error(truth, pred),
        "rmse": skm.root_mean_squared_error(truth, pred),
        "mae": skm.mean_absolute_error(truth, pred),
        "r2": skm.r2_score(truth, pred),
        "mape": skm.mean_absolute_percentage_error(truth, pred),
    }
    if (truth >= 0).all() and (pred >= 0).all():
        scores["rmsle"] = skm.root_mean_squared_log_error(truth, pred)
    return {k: float(v) for k, v in scores.items()}


def _binary(
    truth: NDArray[Any],
    y_pred: ArrayLike | None,
    y_proba: ArrayLike | None,
    classes: NDArray[Any],
    threshold: float,
) -> dict[str, float]:
    if classes.size != 2:
        raise EvaluationError(
            f"a binary task needs exactly two classes, got {classes.size}",
            classes=classes.tolist(),
            hint="pass labels=[negative, positive] when a sample holds one class",
        )
    _check_labels(truth, classes)
    negative, positive = classes[0], classes[1]
    scores: dict[str, float] = {}
    if y_proba is not None:
        proba = _aligned(y_proba, truth, "y_proba").astype(float)
        if proba.ndim == 2 and proba.shape[1] == 2:
            proba = proba[:, 1]
        if proba.ndim != 1:
            raise EvaluationError(
                "binary y_proba must be the positive-class probability (n,) or (n, 2)",
                shape=proba.shape,
            )
        _check_proba(proba)
        pred = np.where(proba >= threshold, positive, negative)
        is_pos = truth == positive
        if is_pos.all() or not is_pos.any():
            raise EvaluationError(
                "roc_auc and pr_auc need both classes in y_true",
                metric="roc_auc",
                classes_present=np.unique(truth).tolist(),
                hint=_PROBA_HINT,
            )
        scores["roc_auc"] = skm.roc_auc_score(is_pos, proba)
        scores["pr_auc"] = skm.average_precision_score(is_pos, proba)
        scores["log_loss"] = skm.log_loss(is_pos, proba, labels=[False, True])
        scores["brier"] = skm.brier_score_loss(is_pos, proba)
    else:
        pred = _aligned(y_pred, truth, "y_pred")  # type: ignore[arg-type]
        _check_labels(pred, classes, name="y_pred")
    labelled = {
        "accuracy": skm.accuracy_score(truth, pred),
        "precision": skm.precision_score(truth, pred, pos_label=positive, zero_division=0),
        "recall": skm.recall_score(truth, pred, pos_label=positive, zero_division=0),
        "f1": skm.f1_score(truth, pred, pos_label=positive, zero_division=0),
        "mcc": skm.matthews_corrcoef(truth, pred),
        "balanced_accuracy": _balanced_accuracy(truth, pred, classes),
    }
    scores.update(labelled)
    return {k: float(scores[k]) for k in BINARY_METRICS if k in scores}


def _multiclass(
    truth: NDArray[Any],
    y_pred: ArrayLike | None,
    y_proba: ArrayLike | None,
    classes: NDArray[Any],
) -> dict[str, float]:
    if classes.size < 2:
        raise EvaluationError(
            "a multiclass task needs at least two classes", classes=classes.tolist()
        )
    _check_labels(truth, classes)
    scores: dict[str, float] = {}
    if y_proba is not None:
        proba = _aligned(y_proba, truth, "y_proba").astype(float)
        if proba.ndim != 2 or proba.shape[1] != classes.size:
            raise EvaluationError(
                f"multiclass y_proba must have one column per class ({classes.size})",
                shape=proba.shape,
                hint="order the columns as labels (estimator.classes_)",
            )
        _check_proba(proba)
        pred = classes[np.argmax(proba, axis=1)]
        missing = sorted(set(classes.tolist()) - set(np.unique(truth).tolist()))
        if missing:
            raise EvaluationError(
                "roc_auc_ovr needs every class in y_true",
                metric="roc_auc_ovr",
                missing_classes=missing,
                hint=_PROBA_HINT,
            )
        scores["roc_auc_ovr"] = skm.roc_auc_score(
            truth, proba, multi_class="ovr", average="macro", labels=classes
        )
        scores["log_loss"] = skm.log_loss(truth, proba, labels=classes)
    else:
        pred = _aligned(y_pred, truth, "y_pred")  # type: ignore[arg-type]
        _check_labels(pred, classes, name="y_pred")
    label_list = classes.tolist()
    scores.update(
        {
            "accuracy": skm.accuracy_score(truth, pred),
            "balanced_accuracy": _balanced_accuracy(truth, pred, classes),
            "f1_macro": skm.f1_score(
                truth, pred, average="macro", labels=label_list, zero_division=0
            ),
            "f1_weighted": skm.f1_score(
                truth, pred, average="weighted", labels=label_list, zero_division=0
            ),
            "precision_macro": skm.precision_score(
                truth, pred, average="macro", labels=label_list, zero_division=0
            ),
            "recall_macro": skm.recall_score(
                truth, pred, average="macro", labels=label_list, zero_division=0
            ),
        }
    )
    return {k: float(scores[k]) for k in MULTICLASS_METRICS if k in scores}


def _balanced_accuracy(truth: NDArray[Any], pred: NDArray[Any], classes: NDArray[Any]) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition, without
    its warning when a predicted class is absent from ``y_true``)."""
    present = [c for c in classes.tolist() if (truth == c).any()]
    return float(np.mean([np.mean(pred[truth == c] == c) for c in present]))


def _check_labels(values: NDArray[Any], classes: NDArray[Any], name: str = "y_true") -> None:
    unknown = sorted(set(np.unique(values).tolist()) - set(classes.tolist()), key=str)
    if unknown:
        raise EvaluationError(
            f"{name} holds classes that are not in labels",
            unknown=unknown[:5],
            labels=classes.tolist(),
            hint="pass labels with every class (estimator.classes_)",
        )


def _check_proba(proba: NDArray[np.float64]) -> None:
    if not np.isfinite(proba).all() or (proba < 0).any() or (proba > 1).any():
        raise EvaluationError(
            "probabilities must be finite and within [0, 1]",
            hint="pass predict_proba output, not decision_function scores",
        )
