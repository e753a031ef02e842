"""Holdout splits and cross-validation splitters, checked against the data before use.

``holdout_split`` returns sorted row indices for one train / test split; ``cv_splitter``
returns a scikit-learn splitter. Both are seeded, so the same seed gives the same rows, and
both fail early with an :class:`EvaluationError` (counts and a hint) instead of a warning
deep inside scikit-learn.

Strategies and kinds:

- holdout: ``random``, ``stratified``, ``group`` (``test_size`` is the share of *groups*),
  ``time`` (the last ``test_size`` share of rows by ``order``; rows sharing the cut-off
  value all go to the test side, so no timestamp is on both sides), ``auto`` (stratified
  for classification, random for regression).
- cross-validation: ``kfold``, ``stratified``, ``repeated`` (stratified for classification),
  ``group`` (StratifiedGroupKFold for classification, GroupKFold else), ``timeseries``
  (rows must already be in time order), ``auto`` (stratified for classification, kfold for
  regression). ``repeats > 1`` turns ``auto`` / ``kfold`` / ``stratified`` into ``repeated``.

>>> train, test = holdout_split([0, 1] * 10, test_size=0.3, strategy="stratified", seed=0)
>>> len(train), len(test)
(14, 6)
>>> cv_splitter("auto", task="binary", folds=5, repeats=1, seed=0).get_n_splits()
5
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    TimeSeriesSplit,
    train_test_split,
)

from loopline.config.training import Task
from loopline.errors import EvaluationError

HoldoutStrategy = Literal["auto", "random", "stratified", "group", "time"]
CVKind = Literal["auto", "kfold", "stratified", "repeated", "group", "timeseries"]
Indices = NDArray[np.intp]


class Splitter(Protocol):
    """What cross-validation needs from a splitter (every scikit-learn CV splitter fits)."""

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any: ...

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int: ...


def holdout_split(
    y: ArrayLike,
    *,
    test_size: float,
    strategy: HoldoutStrategy,
    seed: int,
    groups: ArrayLike | None = None,
    order: ArrayLike | None = None,
    task: Task | None = None,
) -> tuple[Indices, Indices]:
    """Split rows into (train indices, test indices), both sorted ascending.

    ``task`` is needed only for ``strategy="auto"``.
    """
    target = np.asarray(y)
    n = target.shape[0]
    if not 0.0 < test_size < 1.0:
        raise EvaluationError(
            "test_size must be a share between 0 and 1", test_size=test_size, hint="e.g. 0.2"
        )
    if n < 2:
        raise EvaluationError("a holdout split needs at least two rows", rows=n)
    if strategy == "auto":
        if task is None:
            raise EvaluationError("strategy 'auto' needs the task", hint="pass task=...")
        strategy = "random" if task == "regression" else "stratified"
    rows = np.arange(n)
    if strategy == "random":
        train, test = train_test_split(rows, test_size=test_size, random_state=seed, shuffle=True)
    elif strategy == "stratified":
        _check_class_counts(target, needed=2, what="a stratified holdout split")
        n_test = math.ceil(test_size * n)
        n_classes = np.unique(target).size
        if n_test < n_classes or n - n_test < n_classes:
            raise EvaluationError(
                f"a stratified split of {n} rows at test_size={test_size} cannot hold "
                f"all {n_classes} classes on both sides",
                hint="use a test_size that leaves at least one row per class on each side",
            )
        train, test = train_test_split(
            rows, test_size=test_size, random_state=seed, shuffle=True, stratify=target
        )
    elif strategy == "group":
        keys = _aligned(groups, n, "groups", "strategy 'group'")
        if np.unique(keys).size < 2:
            raise EvaluationError("a group split needs at least two groups", groups=1)
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(splitter.split(rows, target, keys))
    elif strategy == "time":
        train, test = _time_split(_aligned(order, n, "order", "strategy 'time'"), test_size)
    else:
        raise EvaluationError(
            f"unknown holdout strategy {strategy!r}",
            hint="use auto, random, stratified, group or time",
        )
    return np.sort(train).astype(np.intp), np.sort(test).astype(np.intp)


def cv_splitter(
    kind: CVKind,
    *,
    task: Task,
    folds: int,
    repeats: int = 1,
    seed: int,
    groups: ArrayLike | None = None,
    y: ArrayLike | None = None,
) -> Splitter:
    """A seeded scikit-learn splitter for ``kind``.

    Pass ``y`` (and ``groups`` for the group kind) to check the data fits the folds now:
    the smallest class must have at least ``folds`` members for stratified kinds, and there
    must be at least ``folds`` groups.
    """
    if folds < 2:
        raise EvaluationError("cross-validation needs at least 2 folds", folds=folds)
    if repeats < 1:
        raise EvaluationError("repeats must be at least 1", repeats=repeats)
    classification = task != "regression"
    if kind == "auto":
        kind = "stratified" if classification else "kfold"
    if repeats > 1 and kind in ("kfold", "stratified"):
        kind = "repeated"
    if repeats > 1 and kind in ("group", "timeseries"):
        raise EvaluationError(
            f"cv kind {kind!r} cannot be repeated", repeats=repeats, hint="set repeats: 1"
        )
    if kind == "stratified" and not classification:
        raise EvaluationError(
            "stratified folds need class labels; this task is regression",
            hint="use cv: kfold (or auto)",
        )
    stratified = classification and kind in ("stratified", "repeated", "group")
    if stratified and y is not None:
        _check_class_counts(
            np.asarray(y), needed=folds, what=f"{folds} stratified folds", folds=True
        )
    if kind == "group":
        _check_groups(groups, folds)
    splitter: Splitter = _build(kind, classification, folds, repeats, seed)
    return splitter


def _build(kind: str, classification: bool, folds: int, repeats: int, seed: int) -> Any:
    if kind == "kfold":
        return KFold(n_splits=folds, shuffle=True, random_state=seed)
    if kind == "stratified":
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if kind == "repeated":
        repeated = RepeatedStratifiedKFold if classification else RepeatedKFold
        return repeated(n_splits=folds, n_repeats=repeats, random_state=seed)
    if kind == "group":
        if classification:
            return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    if kind == "timeseries":
        return TimeSeriesSplit(n_splits=folds)
    raise EvaluationError(
        f"unknown cv kind {kind!r}",
        hint="use auto, kfold, stratified, repeated, group or timeseries",
    )


def _check_groups(groups: ArrayLike | None, folds: int) -> None:
    if groups is None:
        raise EvaluationError(
            "cv kind 'group' needs group labels",
            hint="set validation.group_column (or pass groups=...)",
        )
    n_groups = np.unique(np.asarray(groups)).size
    if n_groups < folds:
        raise EvaluationError(
            f"{folds} group folds need at least {folds} groups, got {n_groups}",
            groups=n_groups,
            folds=folds,
            hint=f"use at most {n_groups} folds",
        )


def _check_class_counts(y: NDArray[Any], *, needed: int, what: str, folds: bool = False) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise EvaluationError(
            f"{what} needs at least two classes, got {classes.size}",
            classes=classes.tolist(),
            hint="check the target column: it holds a single value",
        )
    smallest = int(counts.min())
    fewer = f"use at most {smallest} folds, " if folds else ""
    if smallest < needed:
        rare = classes.tolist()[int(counts.argmin())]
        raise EvaluationError(
            f"{what} needs at least {needed} members per class; class {rare!r} has {smallest}",
            class_counts={str(c): int(k) for c, k in zip(classes, counts, strict=True)},
            hint=f"{fewer}merge rare classes, or collect more rows",
        )


def _aligned(values: ArrayLike | None, n: int, name: str, needed_by: str) -> NDArray[Any]:
    if values is None:
        raise EvaluationError(f"{needed_by} needs {name}", hint=f"pass {name}=... (one per row)")
    array = np.asarray(values)
    if array.shape[0] != n:
        raise EvaluationError(f"{name} has {array.shape[0]} values for {n} rows", name=name)
    return array


def _time_split(order: NDArray[Any], test_size: float) -> tuple[Indices, Indices]:
    n = order.shape[0]
    ranked = np.argsort(order, kind="stable")
    cut = n - math.ceil(test_size * n)
    boundary = order[ranked[cut]]
    # Rows equal to the cut-off value go to test: no timestamp on both sides of the split.
    test_mask = order >= boundary
    if test_mask.all():
        raise EvaluationError(
            "a time split left no training rows: too many rows share the cut-off value",
            cutoff=boundary,
            hint="use a smaller test_size or a finer time column",
        )
    rows = np.arange(n)
    return rows[~test_mask], rows[test_mask]
