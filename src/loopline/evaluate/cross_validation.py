"""Cross-validation that refits a fresh pipeline per fold and keeps out-of-fold predictions.

``estimator_factory()`` must return a new, unfitted estimator (typically a scikit-learn
Pipeline: preprocessing + model). Each fold fits its own copy on the training rows only, so
imputers, encoders, scalers and resamplers never see the fold's test rows.

The folds are drawn once, before any fitting, so every model compared on the same splitter,
data and seed is scored on identical rows (``compare_models`` checks that).

Out-of-fold predictions (``oof``) line up with ``y``: the positive-class probability for a
binary task, one column per class (``labels`` order) for multiclass, values for regression.
Under repeated CV each row's predictions are averaged over the repeats; rows no fold ever
tested (the first block of a time-series split) are NaN and ``covered`` is False for them.
Choose decision thresholds on ``oof[covered]``, never on a test set.

>>> from sklearn.datasets import make_classification
>>> from sklearn.linear_model import LogisticRegression
>>> from loopline.evaluate.splits import cv_splitter
>>> X, y = make_classification(n_samples=120, random_state=0)
>>> cv = cv_splitter("stratified", task="binary", folds=3, seed=0)
>>> result = cross_validate(LogisticRegression, X, y, cv, task="binary")
>>> len(result.folds), result.oof.shape, round(result.summary()["roc_auc"][0], 2) > 0.8
(3, (120,), True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from numpy.typing import ArrayLike, NDArray
from sklearn.utils import _safe_indexing

from loopline.config.training import Task
from loopline.errors import EvaluationError
from loopline.evaluate.metrics import score_all
from loopline.evaluate.splits import Splitter

EstimatorFactory = Callable[[], Any]


@dataclass(frozen=True)
class FoldResult:
    """One fold: its metrics, its sizes and the rows it was tested on."""

    index: int
    n_train: int
    n_test: int
    metrics: dict[str, float]
    test_index: NDArray[np.intp] = field(repr=False)
    fit_seconds: float = 0.0


@dataclass(frozen=True)
class CVResult:
    """Per-fold metrics plus out-of-fold predictions aligned with ``y``."""

    task: Task
    folds: list[FoldResult]
    oof: NDArray[np.float64]
    covered: NDArray[np.bool_]
    labels: NDArray[Any] | None = None

    @property
    def metric_names(self) -> list[str]:
        return list(self.folds[0].metrics)

    def fold_scores(self, metric: str) -> NDArray[np.float64]:
        """The value of ``metric`` in each fold, in fold order."""
        if metric not in self.folds[0].metrics:
            raise EvaluationError(
                f"metric {metric!r} was not computed in this cross-validation",
                metric=metric,
                hint=f"use one of {self.metric_names}",
            )
        return np.array([fold.metrics[metric] for fold in self.folds], dtype=float)

    def summary(self) -> dict[str, tuple[float, float]]:
        """``{metric: (mean, std)}`` over folds; std is the population std (ddof=0), as
        ``cross_val_score(...).std()`` reports it."""
        return {
            name: (float(scores.mean()), float(scores.std()))
            for name in self.metric_names
            for scores in [self.fold_scores(name)]
        }

    def table(self) -> list[dict[str, Any]]:
        """Rows for a report: one per fold, then a ``mean`` and a ``std`` row."""
        rows: list[dict[str, Any]] = [
            {"fold": f.index, "n_train": f.n_train, "n_test": f.n_test, **f.metrics}
            for f in self.folds
        ]
        summary = self.summary()
        rows.append({"fold": "mean", **{k: v[0] for k, v in summary.items()}})
        rows.append({"fold": "std", **{k: v[1] for k, v in summary.items()}})
        return rows


def cross_validate(
    estimator_factory: EstimatorFactory,
    X: Any,
    y: ArrayLike,
    splitter: Splitter,
    *,
    task: Task,
    groups: ArrayLike | None = None,
    threshold: float = 0.5,
    fit_params: Mapping[str, Any] | None = None,
    n_jobs: int = 1,
) -> CVResult:
    """Fit ``estimator_factory()`` on each training fold and score it on the test fold.

    ``X`` may be a pandas / polars DataFrame or an array; ``fit_params`` go to every
    ``fit``. ``n_jobs > 1`` runs folds in joblib worker processes (keep one thread per model);
    the factory must then be importable or picklable, e.g. ``functools.partial(clone, pipe)``.
    """
    target = np.asarray(y)
    n = target.shape[0]
    n_rows = X.shape[0] if hasattr(X, "shape") else len(X)
    if n_rows != n:
        raise EvaluationError(f"X has {n_rows} rows but y has {n}", hint="pass aligned X and y")
    splits = _draw_splits(splitter, X, target, groups)
    labels = np.unique(target) if task != "regression" else None
    if labels is not None and labels.size < 2:
        raise EvaluationError(
            "classification needs at least two classes in y",
            classes=labels.tolist(),
            hint="check the target column: it holds a single value",
        )
    params = dict(fit_params or {})
    fold_args = [
        (estimator_factory, X, target, train, test, task, labels, threshold, params)
        for train, test in splits
    ]
    if n_jobs == 1:
        outputs = [_run_fold(*args) for args in fold_args]
    else:
        outputs = Parallel(n_jobs=n_jobs)(delayed(_run_fold)(*args) for args in fold_args)
    return _assemble(task, target, labels, splits, outputs)


def _draw_splits(
    splitter: Splitter, X: Any, y: NDArray[Any], groups: ArrayLike | None
) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    try:
        splits = [
            (np.asarray(tr, dtype=np.intp), np.asarray(te, dtype=np.intp))
            for tr, te in splitter.split(X, y, groups)
        ]
    except ValueError as exc:
        raise EvaluationError(
            f"the splitter cannot split this data: {exc}",
            splitter=type(splitter).__name__,
            hint="check groups (group kinds need them) and the class counts against the folds",
        ) from exc
    if not splits:
        raise EvaluationError("the splitter produced no folds", splitter=type(splitter).__name__)
    return splits


def _run_fold(
    factory: EstimatorFactory,
    X: Any,
    y: NDArray[Any],
    train: NDArray[np.intp],
    test: NDArray[np.intp],
    task: Task,
    labels: NDArray[Any] | None,
    threshold: float,
    fit_params: dict[str, Any],
) -> tuple[NDArray[np.float64], dict[str, float], float]:
    estimator = factory()
    started = time.perf_counter()
    estimator.fit(_safe_indexing(X, train), y[train], **fit_params)
    seconds = time.perf_counter() - started
    X_test = _safe_indexing(X, test)
    if task == "regression":
        values = np.asarray(estimator.predict(X_test), dtype=float)
        return values, score_all(task, y[test], y_pred=values), seconds
    assert labels is not None
    proba = _proba_in_label_order(estimator, X_test, labels)
    if task == "binary":
        proba = proba[:, 1]
    scores = score_all(task, y[test], y_proba=proba, threshold=threshold, labels=labels)
    return proba, scores, seconds


def _proba_in_label_order(estimator: Any, X_test: Any, labels: NDArray[Any]) -> NDArray[np.float64]:
    """``predict_proba`` with one column per label, zeros for classes the fold never saw."""
    if not hasattr(estimator, "predict_proba"):
        raise EvaluationError(
            f"{type(estimator).__name__} has no predict_proba",
            hint="use a probabilistic classifier or wrap it with evaluate.calibrate()",
        )
    raw = np.asarray(estimator.predict_proba(X_test), dtype=float)
    seen = np.asarray(estimator.classes_)
    proba = np.zeros((raw.shape[0], labels.size))
    proba[:, np.searchsorted(labels, seen)] = raw
    return proba


def _assemble(
    task: Task,
    y: NDArray[Any],
    labels: NDArray[Any] | None,
    splits: list[tuple[NDArray[np.intp], NDArray[np.intp]]],
    outputs: list[tuple[NDArray[np.float64], dict[str, float], float]],
) -> CVResult:
    n = y.shape[0]
    width = labels.size if task == "multiclass" and labels is not None else 0
    total = np.zeros((n, width)) if width else np.zeros(n)
    counts = np.zeros(n)
    folds = []
    for index, ((train, test), (pred, scores, seconds)) in enumerate(
        zip(splits, outputs, strict=True)
    ):
        total[test] += pred
        counts[test] += 1
        folds.append(FoldResult(index, train.size, test.size, scores, test, seconds))
    covered = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        oof = total / (counts[:, None] if width else counts)
    return CVResult(task=task, folds=folds, oof=oof, covered=covered, labels=labels)
