"""Publish a finished training run: MLflow run, model, registered version, HTML report.

:func:`publish` is the last step of :class:`~loopline.train.job.TrainingJob`. In one MLflow
run (experiment ``tracking.experiment`` or the project name) it logs:

- parameters: the job config flattened (``job.validation.folds``), the best candidate's
  parameters (``best.<name>``), ``best_candidate``, ``task``, ``primary``;
- metrics: the best candidate's per-fold values (``fold_<metric>``, step = fold), every
  candidate's CV summary (``cv_<candidate>_<metric>_mean`` / ``_std``), the holdout
  metrics (``holdout_<metric>``) and the shipped ``threshold``;
- lineage: run tags ``loopline.source``, ``loopline.rows``, ``loopline.content_hash``,
  ``loopline.batch_ids`` (as many as fit a tag) and the full list in ``lineage.json``;
- the model (scikit-learn flavour) with its signature and a few training rows as the
  input example, and the HTML report under ``report/``.

With ``register_as`` the model becomes a new registered version, alias ``challenger``,
tagged with :class:`~loopline.evaluate.model_tags.ModelTags` (target, task, threshold,
classes, primary metric, holdout metrics, lineage) so it can be scored and gated later.

Example (not run here: it opens an MLflow store)::

    published = publish(config, "churn", job, data, report, model, X_train, progress)
    published.run_id, published.model_version, published.report_path
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.config import LooplineConfig, TrainJobConfig
from loopline.evaluate.model_tags import ModelTags
from loopline.evaluate.report_data import CandidateOutcome, TrainReportData
from loopline.train.data import TrainingData

log = logging.getLogger(__name__)

Progress = Callable[..., None]
EXAMPLE_ROWS = 5
SIGNATURE_ROWS = 50
MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
MAX_TAG_CHARS = 4900  # model-version tags are VARCHAR(5000) on database-backed stores
MAX_SOURCE_CHARS = 1000


@dataclass(frozen=True)
class Published:
    """Where a training run went: its MLflow run, model, registered version and report."""

    run_id: str
    model_uri: str
    model_version: str | None
    report_path: Path | None


def publish(
    config: LooplineConfig,
    name: str,
    job: TrainJobConfig,
    data: TrainingData,
    report: TrainReportData,
    model: Any,
    X_train: pd.DataFrame,
    progress: Progress,
) -> Published:
    """Log the run, register the model (``job.register_as``) and write the report.

    ``report`` gets its ``mlflow_run_id`` and ``model_version`` filled in before the
    report is written; ``progress(event, **payload)`` hears ``logged``, ``registered``
    and ``report``.
    """
    from loopline.store.tracking import Tracker

    tracking = config.tracking
    tracker = Tracker(
        tracking, base_dir=config.project_dir, experiment=tracking.experiment or config.project
    )
    best = _best(report)
    version: str | None = None
    with tracker.start_run(name, tags=_lineage_tags(name, data)) as run:
        params = _flatten(job.model_dump(mode="json"), "job")
        params |= {f"best.{k}": v for k, v in best.best_params.items()}
        params |= {
            "best_candidate": best.name,
            "task": report.task,
            "primary": report.primary_metric,
        }
        run.log_params({k: str(v)[:MAX_PARAM_CHARS] for k, v in params.items()})
        run.log_fold_metrics([{"fold": f.index, **f.metrics} for f in best.cv.folds])
        run.log_metrics(_cv_metrics(report.candidates))
        run.log_metrics({f"holdout_{k}": v for k, v in report.holdout_metrics.items()})
        if report.threshold is not None:
            run.log_metrics({"threshold": report.threshold.threshold})
        run.log_text(json.dumps({**data.lineage(), "batch_ids": data.batch_ids}), "lineage.json")
        sample = X_train.head(SIGNATURE_ROWS)
        model_uri = run.log_model(
            model,
            signature_from=(sample, model.predict(sample)),
            input_example=X_train.head(EXAMPLE_ROWS),
        )
        progress("logged", run_id=run.run_id, model_uri=model_uri)
        report.mlflow_run_id = run.run_id
        if job.register_as:
            version = _register(tracker, name, job, data, report, model_uri, run.run_id)
            report.model_version = version
            progress("registered", name=job.register_as, version=version)
        report_path = _write_report(config, name, report, run)
        if report_path is not None:
            progress("report", path=str(report_path))
    return Published(run.run_id, model_uri, version, report_path)


def _best(report: TrainReportData) -> CandidateOutcome:
    return next(o for o in report.candidates if o.name == report.best)


def _lineage_tags(name: str, data: TrainingData) -> dict[str, str]:
    return {
        "loopline.job": name,
        "loopline.source": data.source[:MAX_TAG_CHARS],
        "loopline.rows": str(data.rows),
        "loopline.content_hash": data.content_hash,
        "loopline.batch_count": str(len(data.batch_ids)),
        "loopline.batch_ids": json_within(data.batch_ids, MAX_TAG_CHARS),
    }


def _cv_metrics(candidates: list[CandidateOutcome]) -> dict[str, float]:
    return {
        f"cv_{o.name}_{metric}_{stat}": value
        for o in candidates
        for metric, pair in o.cv.summary().items()
        for stat, value in zip(("mean", "std"), pair, strict=True)
    }


def _register(
    tracker: Any,
    name: str,
    job: TrainJobConfig,
    data: TrainingData,
    report: TrainReportData,
    model_uri: str,
    run_id: str,
) -> str:
    from loopline.registry import ModelRegistry

    assert job.register_as is not None
    threshold = report.threshold
    tags = ModelTags(
        target=job.target,
        task=report.task,
        primary_metric=report.primary_metric,
        threshold=None if threshold is None else threshold.threshold,
        positive_class=None if report.positive_class is None else str(report.positive_class),
        classes=report.classes,
        holdout_metrics=report.holdout_metrics,
        lineage={**data.lineage(), "source": data.source[:MAX_SOURCE_CHARS]},
    ).to_tags()
    tags["loopline.job"] = name
    mean, std = _best(report).cv.summary()[report.primary_metric]
    info = ModelRegistry(tracker).register(
        job.register_as,
        model_uri,
        run_id=run_id,
        description=f"{report.best} from job {name}: CV {report.primary_metric} "
        f"{mean:.4f} ± {std:.4f}",
        tags=tags,
    )
    return info.version


def _write_report(
    config: LooplineConfig, name: str, report: TrainReportData, run: Any
) -> Path | None:
    if importlib.util.find_spec("loopline.evaluate.report") is None:
        log.warning("loopline.evaluate.report is missing: no HTML report written")
        return None
    from loopline.evaluate import report as report_module

    path = config.project_dir / "reports" / f"train-{name}-{run.run_id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    written: Path = report_module.write_train_report(report, path)
    run.log_artifact(written, "report")
    return written


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts as dotted keys; lists as JSON.

    >>> _flatten({"a": {"b": 1}, "c": [1, 2]}, "job")
    {'job.a.b': 1, 'job.c': '[1, 2]'}
    """
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= _flatten(item, f"{prefix}.{key}")
        return flat
    if isinstance(value, list):
        return {prefix: json.dumps(value)}
    return {prefix: value}


def json_within(values: list[Any], limit: int) -> str:
    """A JSON list of the first values that fit in ``limit`` characters.

    >>> json_within(["a", "b", "c", "d"], 12)
    '["a", "b"]'
    """
    text = json.dumps(values)
    kept = len(values)
    while len(text) > limit and kept:
        kept = kept * 3 // 4
        text = json.dumps(values[:kept])
    return text
