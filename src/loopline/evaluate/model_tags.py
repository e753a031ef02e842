"""The ``loopline.*`` model-version tags: what a trained model carries so that it can be
scored again, gated and explained without the training job.

This is the contract between training (which writes the tags when it registers a version)
and everything downstream (``loopline evaluate``, ``loopline models promote``, serving):

============================ ==========================================================
``loopline.target``          the target column
``loopline.task``            ``binary``, ``multiclass`` or ``regression``
``loopline.threshold``       the shipped decision threshold (binary; text, ``""``: none)
``loopline.positive_class``  the positive class of a binary model (text)
``loopline.classes``         the classes as a JSON list
``loopline.primary_metric``  the metric reported first and gated on by default
``loopline.holdout_metrics`` JSON object: metric → value on the job's holdout rows
``loopline.lineage``         JSON object: the training data (table, rows, hash, batch ids)
============================ ==========================================================

Training writes them with ``client.set_model_version_tag(name, version, key, value)`` for
each item of :meth:`ModelTags.to_tags` (or ``ModelRegistry.register(..., tags=...)``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast, get_args

from loopline.config.training import Task
from loopline.errors import EvaluationError
from loopline.registry import VersionInfo

TAG_PREFIX = "loopline."
TARGET_TAG = "loopline.target"
TASK_TAG = "loopline.task"
THRESHOLD_TAG = "loopline.threshold"
POSITIVE_CLASS_TAG = "loopline.positive_class"
CLASSES_TAG = "loopline.classes"
PRIMARY_METRIC_TAG = "loopline.primary_metric"
HOLDOUT_METRICS_TAG = "loopline.holdout_metrics"
LINEAGE_TAG = "loopline.lineage"
_REQUIRED = (TARGET_TAG, TASK_TAG, PRIMARY_METRIC_TAG)
_TRAIN_HINT = "models registered by `loopline train` carry these tags"


@dataclass(frozen=True)
class ModelTags:
    """The ``loopline.*`` model-version tags of a trained model.

    >>> tags = ModelTags("churned", "binary", "roc_auc", threshold=0.4, positive_class="Yes",
    ...                  classes=["No", "Yes"], holdout_metrics={"roc_auc": 0.84})
    >>> tags.to_tags()["loopline.threshold"], ModelTags.from_tags(tags.to_tags()) == tags
    ('0.4', True)
    """

    target: str
    task: Task
    primary_metric: str
    threshold: float | None = None
    positive_class: str | None = None
    classes: list[Any] = field(default_factory=list)
    holdout_metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_tags(self) -> dict[str, str]:
        """The tags to set on a model version (all values text)."""
        return {
            TARGET_TAG: self.target,
            TASK_TAG: self.task,
            THRESHOLD_TAG: "" if self.threshold is None else repr(float(self.threshold)),
            POSITIVE_CLASS_TAG: self.positive_class or "",
            CLASSES_TAG: json.dumps(self.classes, default=str),
            PRIMARY_METRIC_TAG: self.primary_metric,
            HOLDOUT_METRICS_TAG: json.dumps(self.holdout_metrics),
            LINEAGE_TAG: json.dumps(self.lineage, default=str),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], *, where: str = "model version") -> ModelTags:
        """Read the tags back; :class:`EvaluationError` if a required one is missing or bad."""
        missing = [key for key in _REQUIRED if not tags.get(key)]
        if missing:
            raise EvaluationError(
                f"{where} has no loopline training tags ({', '.join(missing)} missing)",
                hint=f"{_TRAIN_HINT}; a model registered by hand cannot be scored by loopline",
            )
        task = tags[TASK_TAG]
        if task not in get_args(Task):
            raise EvaluationError(
                f"{where} has an unknown task tag {task!r}",
                tag=TASK_TAG,
                hint="the task must be 'binary', 'multiclass' or 'regression'",
            )
        threshold_text = tags.get(THRESHOLD_TAG, "").strip()
        try:
            threshold = float(threshold_text) if threshold_text else None
        except ValueError:
            raise EvaluationError(
                f"{where} has a threshold tag that is not a number: {threshold_text!r}",
                tag=THRESHOLD_TAG,
            ) from None
        return cls(
            target=tags[TARGET_TAG],
            task=cast(Task, task),
            primary_metric=tags[PRIMARY_METRIC_TAG],
            threshold=threshold,
            positive_class=tags.get(POSITIVE_CLASS_TAG) or None,
            classes=list(_json_tag(tags, CLASSES_TAG, [], where)),
            holdout_metrics={
                str(k): float(v) for k, v in _json_tag(tags, HOLDOUT_METRICS_TAG, {}, where).items()
            },
            lineage=dict(_json_tag(tags, LINEAGE_TAG, {}, where)),
        )

    @classmethod
    def of(cls, info: VersionInfo) -> ModelTags:
        """The tags of a registered version (the error names the model and version)."""
        try:
            return cls.from_tags(info.tags, where=f"version {info.version} of {info.name!r}")
        except EvaluationError as exc:
            exc.fields |= {"model": info.name, "version": info.version}
            raise


def _json_tag(tags: Mapping[str, str], key: str, empty: Any, where: str) -> Any:
    text = tags.get(key, "").strip()
    if not text:
        return empty
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, type(empty)):
        raise EvaluationError(
            f"{where} has a malformed {key} tag: expected a JSON {type(empty).__name__}",
            tag=key,
            value=text[:80],
        )
    return value
