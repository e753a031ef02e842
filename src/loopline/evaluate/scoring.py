"""Score a registered model version on a table, and score versions for a promotion gate.

Everything needed to score a version again comes from its ``loopline.*`` model-version tags
(:mod:`loopline.evaluate.model_tags`): the target column, the task, the classes, the
positive class and the shipped threshold. Class labels are compared by their text form
(``1``, ``1.0`` and ``"1"`` are one class; a boolean is ``true`` / ``false``), so a target
read back from the warehouse (an integer column with nulls comes back as floats) still
matches the classes the model was trained on.

Example (not run here: it needs a tracking store)::

    registry = ModelRegistry(tracker)
    frame = read_scoring_table(open_warehouse(url, base_dir=Path(".")), "churn_2024_q4")
    result = score_registered(registry, "churn", "champion", frame)
    result.metrics["roc_auc"], result.rows, result.dropped_null_target
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from loopline.config.training import Task
from loopline.errors import EvaluationError, RegistryError
from loopline.evaluate.metrics import greater_is_better, score_all
from loopline.evaluate.model_tags import (
    CLASSES_TAG,
    HOLDOUT_METRICS_TAG,
    POSITIVE_CLASS_TAG,
    PRIMARY_METRIC_TAG,
    TASK_TAG,
    ModelTags,
)
from loopline.lineage import is_lineage
from loopline.registry import Gate, ModelRegistry, VersionInfo
from loopline.store.warehouse import SqlWarehouse

RECOMMENDATION = "recommendation"  # loopline.task of a recommender (no target, no classes)
_TRAIN_HINT = "models registered by `loopline train` carry the loopline.* tags"


@dataclass(frozen=True)
class EvaluationResult:
    """The metrics of one model version on one table (``score_all`` of its task)."""

    model: str
    version: str
    aliases: tuple[str, ...]
    task: Task
    target: str
    primary_metric: str
    threshold: float | None
    positive_class: str | None
    metrics: dict[str, float]
    rows: int
    dropped_null_target: int


def resolve_version(registry: ModelRegistry, name: str, alias_or_version: str | int) -> VersionInfo:
    """The version an alias (``champion``) or a version number (``3``) names.

    Unknown model, version or alias → :class:`RegistryError`.
    """
    ref = str(alias_or_version)
    if ref.isdigit():
        return registry.version(name, ref)
    info = registry.alias(name, ref)
    if info is None:
        raise RegistryError(
            f"model {name!r} has no {ref!r} version",
            model=name,
            alias=ref,
            hint="see `loopline models list` for its aliases, or give a version number",
        )
    return info


def read_scoring_table(warehouse: SqlWarehouse, table: str) -> pa.Table:
    """All rows of a warehouse table; an unknown table is an :class:`EvaluationError` that
    lists the tables there are."""
    known = warehouse.tables()
    if table not in known:
        shown = ", ".join(t for t in known if not is_lineage(t)) or "none"
        raise EvaluationError(
            f"no warehouse table named {table!r}",
            table=table,
            hint=f"tables: {shown}; load data with `loopline ingest`",
        )
    return warehouse.read_table(table)


def score_registered(
    registry: ModelRegistry,
    name: str,
    alias_or_version: str | int,
    frame: pa.Table | pd.DataFrame,
) -> EvaluationResult:
    """Load a registered version, predict on ``frame`` and compute every metric of its task
    against the target column named by its tags, at its shipped threshold.

    Lineage columns (``_source``, ``_batch_id`` ...) are ignored; rows whose target is null
    are dropped and counted; a model fitted on a DataFrame gets exactly its training columns.
    """
    info = resolve_version(registry, name, alias_or_version)
    tags = ModelTags.of(info)
    data = frame.to_pandas() if isinstance(frame, pa.Table) else frame
    if tags.target not in data.columns:
        raise EvaluationError(
            f"the table has no target column {tags.target!r}",
            model=name,
            version=info.version,
            hint=f"score on a table with the training columns and {tags.target!r}; "
            f"columns here: {', '.join(map(str, data.columns[:20]))}",
        )
    known = data[tags.target].notna()
    dropped = int((~known).sum())
    data = data.loc[known]
    if data.empty:
        raise EvaluationError(
            f"no rows with a target value to score (column {tags.target!r})",
            model=name,
            version=info.version,
            dropped_null_target=dropped,
        )
    model = registry.load(name, version=info.version)
    features = _features(model, data, tags.target, info)
    truth = data[tags.target]
    threshold = None
    positive = None
    with _predicting(info):
        if tags.task == "regression":
            metrics = score_all("regression", truth.to_numpy(float), y_pred=model.predict(features))
        else:
            columns = _column_classes(model, tags)
            y_true = label_keys(truth)
            if tags.task == "binary":
                positive = _positive(tags, columns, info)
                threshold = 0.5 if tags.threshold is None else tags.threshold
                metrics = _score_binary(model, features, y_true, columns, positive, threshold)
            else:
                metrics = _score_multiclass(model, features, y_true, columns)
    return EvaluationResult(
        model=name,
        version=info.version,
        aliases=info.aliases,
        task=tags.task,
        target=tags.target,
        primary_metric=tags.primary_metric,
        threshold=threshold,
        positive_class=positive,
        metrics=metrics,
        rows=len(data),
        dropped_null_target=dropped,
    )


def label_keys(values: ArrayLike) -> NDArray[np.str_]:
    """Class labels as comparable text: integral numbers without ``.0``, booleans lower case.

    >>> label_keys([1.0, 0.0]).tolist(), label_keys([True, False]).tolist()
    (['1', '0'], ['true', 'false'])
    >>> label_keys(["Yes", "No"]).tolist(), label_keys([0.5]).tolist()
    (['Yes', 'No'], ['0.5'])
    """
    series = pd.Series(np.asarray(values, dtype=object)).infer_objects()
    if pd.api.types.is_bool_dtype(series):
        keys: Any = np.where(series.to_numpy(bool), "true", "false")
    elif pd.api.types.is_numeric_dtype(series):
        numbers = series.to_numpy(float)
        integral = np.all(np.isfinite(numbers)) and np.all(np.mod(numbers, 1) == 0)
        keys = numbers.astype(np.int64) if integral else numbers
    else:
        keys = series.astype(str).to_numpy()
    return np.asarray(keys, dtype=str)


class VersionScorer:
    """Scores versions for :meth:`ModelRegistry.promote` and keeps what it computed.

    With a ``frame`` every version is scored on those rows (:func:`score_registered`, the
    same data for challenger and champion); without one, each version's logged holdout
    metrics (its ``loopline.holdout_metrics`` tag) are used.
    """

    def __init__(self, registry: ModelRegistry, frame: pa.Table | pd.DataFrame | None = None):
        self.registry = registry
        self.frame = frame
        self.scores: dict[str, dict[str, float]] = {}
        self.results: dict[str, EvaluationResult] = {}

    def __call__(self, info: VersionInfo) -> dict[str, float]:
        if self.frame is not None:
            result = score_registered(self.registry, info.name, info.version, self.frame)
            self.results[info.version] = result
            scores = result.metrics
        else:
            scores = holdout_scores(info)
            if not scores:
                raise EvaluationError(
                    f"version {info.version} of {info.name!r} has no logged holdout metrics",
                    model=info.name,
                    version=info.version,
                    hint="score both versions on the same table instead (--on TABLE)",
                )
        self.scores[info.version] = scores
        return scores


def holdout_scores(info: VersionInfo) -> dict[str, float]:
    """A version's logged holdout metrics. A recommender (``loopline.task`` is
    ``recommendation``, registered by ``loopline recommender train``) has no target column,
    so only its metrics tag is read."""
    if info.tags.get(TASK_TAG) == RECOMMENDATION:
        try:
            raw = json.loads(info.tags.get(HOLDOUT_METRICS_TAG) or "{}")
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            raise EvaluationError(
                f"version {info.version} of {info.name!r} has a malformed "
                f"{HOLDOUT_METRICS_TAG} tag",
                model=info.name,
                version=info.version,
            )
        return {str(k): float(v) for k, v in raw.items()}
    return ModelTags.of(info).holdout_metrics


def promotion_gate(
    info: VersionInfo,
    *,
    metric: str | None = None,
    max_regression: float = 0.0,
    greater: bool | None = None,
) -> Gate:
    """The gate for promoting ``info``: ``metric`` (default: its primary metric), the
    direction from the metric unless ``greater`` says otherwise."""
    chosen = metric or (
        info.tags.get(PRIMARY_METRIC_TAG, "")
        if info.tags.get(TASK_TAG) == RECOMMENDATION
        else ModelTags.of(info).primary_metric
    )
    if greater is None:
        try:
            greater = greater_is_better(chosen)
        except EvaluationError as exc:
            exc.hint = "give the direction of a custom metric (--lower-is-better or not)"
            raise
    if not math.isfinite(max_regression) or max_regression < 0:
        raise EvaluationError(
            f"the maximum regression must be a finite number >= 0, got {max_regression!r}"
        )
    return Gate(chosen, greater_is_better=greater, max_regression=max_regression)


@contextmanager
def _predicting(info: VersionInfo) -> Iterator[None]:
    """Turn a model's failure to predict on these rows into an :class:`EvaluationError`."""
    try:
        yield
    except EvaluationError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(
            f"version {info.version} of {info.name!r} could not predict on these rows: {first}",
            model=info.name,
            version=info.version,
            hint="score on data with the training columns and types",
        ) from exc


def _features(model: Any, data: pd.DataFrame, target: str, info: VersionInfo) -> pd.DataFrame:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        keep = [c for c in data.columns if c != target and not is_lineage(str(c))]
        return data[keep]
    missing = [str(c) for c in names if c not in data.columns]
    if missing:
        raise EvaluationError(
            f"the table lacks {len(missing)} column(s) the model was trained on",
            model=info.name,
            version=info.version,
            missing=", ".join(missing[:10]),
            hint="score on a table with the same columns as the training data",
        )
    return data[list(names)]


def _column_classes(model: Any, tags: ModelTags) -> list[str]:
    """The class of each predict_proba column, as label keys: the model's ``classes_`` when
    they are the tagged classes, else the tagged order."""
    tagged = label_keys(tags.classes).tolist() if tags.classes else []
    own = getattr(model, "classes_", None)
    if own is not None:
        keys: list[str] = label_keys(own).tolist()
        if not tagged or sorted(keys) == sorted(tagged):
            return keys
    if not tagged:
        raise EvaluationError(
            "the model has no classes: neither a loopline.classes tag nor classes_",
            tag=CLASSES_TAG,
            hint=_TRAIN_HINT,
        )
    return tagged


def _positive(tags: ModelTags, columns: list[str], info: VersionInfo) -> str:
    if len(columns) != 2:
        raise EvaluationError(
            f"a binary model needs two classes, version {info.version} has {len(columns)}",
            model=info.name,
            classes=columns,
        )
    if tags.positive_class is None:
        return sorted(columns)[1]
    text = tags.positive_class
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    key = label_keys([parsed if isinstance(parsed, int | float | bool) else text])[0]
    matches = [c for c in columns if c == key] or [c for c in columns if c.lower() == key.lower()]
    if not matches:
        raise EvaluationError(
            f"the positive class {text!r} is not one of the model's classes",
            model=info.name,
            version=info.version,
            classes=columns,
            tag=POSITIVE_CLASS_TAG,
        )
    return str(matches[0])


def _score_binary(
    model: Any,
    features: pd.DataFrame,
    y_true: NDArray[np.str_],
    columns: list[str],
    positive: str,
    threshold: float,
) -> dict[str, float]:
    negative = next(c for c in columns if c != positive)
    labels = [negative, positive]
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(features))[:, columns.index(positive)]
        return score_all("binary", y_true, y_proba=proba, threshold=threshold, labels=labels)
    predicted = label_keys(model.predict(features))
    return score_all("binary", y_true, y_pred=predicted, labels=labels)


def _score_multiclass(
    model: Any, features: pd.DataFrame, y_true: NDArray[np.str_], columns: list[str]
) -> dict[str, float]:
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(features))
        return score_all("multiclass", y_true, y_proba=proba, labels=columns)
    predicted = label_keys(model.predict(features))
    return score_all("multiclass", y_true, y_pred=predicted, labels=columns)
