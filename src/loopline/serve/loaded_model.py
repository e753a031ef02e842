"""One loaded model version: its signature, tags, scoring thread, and how it is loaded.

:func:`load_version` loads a registered version with MLflow (scikit-learn flavour), reads its
``loopline.*`` tags (task, threshold, classes) and signature, and warms it up with its input
example; :class:`LoadedModel` scores parsed rows of several requests in one model call (its
own :class:`~loopline.serve.batcher.MicroBatcher`) and answers each with a
:class:`Prediction`. :class:`~loopline.serve.model_host.ModelHost` keeps the loaded versions
and swaps them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from loopline.errors import (
    EvaluationError,
    NotServedError,
    ServeError,
    SignatureError,
)
from loopline.evaluate.model_tags import ModelTags
from loopline.registry import ModelRegistry, VersionInfo
from loopline.serve.batcher import MicroBatcher
from loopline.serve.signature import InputSchema, ParsedRows
from loopline.store.tracking import import_mlflow

log = logging.getLogger(__name__)

# mlflow_scope sets process-wide MLflow URIs: loads from several threads must not interleave.
_LOAD_LOCK = threading.Lock()
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"

BatchHook = Callable[[str, str, int, int, float], None]
"""Called after each scored batch (metrics): model, version, requests, rows, seconds."""


@dataclass(frozen=True)
class Prediction:
    """The scores of one request's rows, JSON-ready (plain Python values)."""

    model: str
    version: str
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None
    labels: list[Any] | None
    threshold: float | None


@dataclass
class LoadedModel:
    """One loaded, warmed-up model version and its scoring thread."""

    name: str
    version: str
    info: VersionInfo
    model: Any
    schema: InputSchema
    task: str
    threshold: float | None
    positive_class: Any
    classes: list[Any]
    loaded_at: datetime
    max_batch: int = 256
    on_batch: BatchHook | None = field(default=None, repr=False)
    batcher: MicroBatcher[ParsedRows, Prediction] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hook = self.on_batch
        self.batcher = MicroBatcher(
            self.score,
            max_batch=self.max_batch,
            size=_rows,
            name=f"{self.name}-v{self.version}",
            on_batch=None
            if hook is None
            else lambda requests, rows, seconds: hook(
                self.name, self.version, requests, rows, seconds
            ),
        )
        self._classifier = self.task != "regression" and hasattr(self.model, "predict_proba")
        found = getattr(self.model, "classes_", None)
        keys = list(found) if found is not None else list(self.classes)
        # training encodes labels (classes_ 0..k-1); the tags keep them in that order
        tagged = len(self.classes) == len(keys) and sorted(map(str, keys)) != sorted(
            map(str, self.classes)
        )
        if self.classes and tagged:
            keys = list(self.classes)
        self._class_values = [_plain(c) for c in keys]
        self._class_keys = [str(c) for c in self._class_values]
        self._positive: int | None = None
        if self._classifier and self.threshold is not None and len(self._class_keys) == 2:
            wanted = None if self.positive_class is None else str(self.positive_class)
            self._positive = self._class_keys.index(wanted) if wanted in self._class_keys else 1

    def score(self, parts: list[ParsedRows]) -> list[Prediction]:
        """Score several requests' rows in one model call (runs in the scoring thread)."""
        batch = ParsedRows.concat(parts)
        try:
            frame = batch.frame()
            if self._classifier:
                proba = np.asarray(self.model.predict_proba(frame), dtype=np.float64)
                predictions = [self._class_values[i] for i in proba.argmax(axis=1).tolist()]
                probabilities: list[dict[str, float]] | None = [
                    dict(zip(self._class_keys, row, strict=True)) for row in proba.tolist()
                ]
                labels = self._labels(proba)
            else:
                predictions = np.asarray(self.model.predict(frame)).tolist()
                probabilities = labels = None
        except Exception as exc:
            # the model's own words stay in the log: they may show internals to a caller
            log.warning(
                "model %s version %s failed on a batch of %d row(s)",
                self.name,
                self.version,
                batch.n,
                exc_info=True,
            )
            raise ServeError(
                f"model {self.name!r} version {self.version} could not score the rows",
                model=self.name,
                version=self.version,
                error=type(exc).__name__,
                status=500,
            ) from exc
        out, start = [], 0
        for part in parts:
            end = start + part.n
            out.append(
                Prediction(
                    model=self.name,
                    version=self.version,
                    predictions=predictions[start:end],
                    probabilities=None if probabilities is None else probabilities[start:end],
                    labels=None if labels is None else labels[start:end],
                    threshold=self.threshold,
                )
            )
            start = end
        return out

    def _labels(self, proba: np.ndarray) -> list[Any] | None:
        if self._positive is None or self.threshold is None:
            return None
        positive = self._class_values[self._positive]
        negative = self._class_values[1 - self._positive]
        threshold = self.threshold
        return [positive if p >= threshold else negative for p in proba[:, self._positive].tolist()]

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "loaded_at": self.loaded_at.isoformat(),
            "task": self.task,
            "threshold": self.threshold,
            "positive_class": self.positive_class,
            "classes": self._class_values,
            "inputs": self.schema.describe(),
        }


def load_version(
    registry: ModelRegistry,
    info: VersionInfo,
    *,
    max_batch: int = 256,
    on_batch: BatchHook | None = None,
) -> LoadedModel:
    """Load one registered version with its signature and tags, and warm it up with its input
    example (one prediction) so that the first request does not pay for it."""
    mlflow = import_mlflow()
    from mlflow.models import Model

    where = f"version {info.version} of {info.name!r}"
    try:
        with (
            _LOAD_LOCK,
            _no_progress_bar(),
            registry.tracker.mlflow_scope(),
            tempfile.TemporaryDirectory() as tmp,
        ):
            local = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp)
            meta = Model.load(local)
            model = mlflow.sklearn.load_model(local)
            example = meta.load_input_example(local) if meta.saved_input_example_info else None
    except Exception as exc:
        raise NotServedError(
            f"could not load {where}: {type(exc).__name__}: {exc}",
            model=info.name,
            version=info.version,
            status=503,
        ) from exc
    try:
        tags = ModelTags.of(info)
        task, threshold, positive, classes = (
            tags.task,
            tags.threshold,
            tags.positive_class,
            tags.classes,
        )
    except EvaluationError:  # registered by hand: infer what the model itself says
        classes = [_plain(c) for c in getattr(model, "classes_", [])]
        task = "regression" if not classes else "binary" if len(classes) == 2 else "multiclass"
        threshold = positive = None
    loaded = LoadedModel(
        name=info.name,
        version=info.version,
        info=info,
        model=model,
        schema=InputSchema.from_signature(meta.signature),
        task=task,
        threshold=threshold,
        positive_class=positive,
        classes=classes,
        loaded_at=datetime.now(UTC),
        max_batch=max_batch,
        on_batch=on_batch,
    )
    if example is not None:
        _warm_up(loaded, example)
    return loaded


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """No tqdm bar on stderr while a version downloads: the server logs JSON lines (a
    process-wide variable, set under the load lock and restored; a user's setting wins)."""
    if _PROGRESS_BAR_ENV in os.environ:
        yield
        return
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(_PROGRESS_BAR_ENV, None)


def _warm_up(loaded: LoadedModel, example: Any) -> None:
    records = example.head(1).to_dict(orient="records") if hasattr(example, "head") else None
    if not isinstance(records, list):
        return
    try:
        loaded.score([loaded.schema.parse(records)])
    except SignatureError as exc:
        raise NotServedError(
            f"the input example of version {loaded.version} of {loaded.name!r} does not match "
            f"its own signature: {exc.errors[:3]}",
            model=loaded.name,
            version=loaded.version,
            status=503,
        ) from exc


def _rows(parsed: ParsedRows) -> int:
    return parsed.n


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value (JSON-ready)."""
    return value.item() if isinstance(value, np.generic) else value
