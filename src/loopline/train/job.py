"""A training job from data to a registered model: the runner behind ``loopline train``.

:meth:`TrainingJob.run` does, in order (one thread per model throughout):

1. read the rows and their lineage (:mod:`loopline.train.data`);
2. check the target, infer the task, encode the target, infer feature roles;
3. split off the holdout (``validation.holdout``, ``validation.split``); nothing below
   but the final scoring sees the holdout rows;
4. draw the outer cross-validation folds of the training part once; for each candidate,
   search its parameters (inner CV of ``search.inner_folds`` on the training part), then
   cross-validate the best parameters on the outer folds;
5. compare the candidates on the primary metric (corrected resampled t-test);
6. binary: choose the decision threshold on the best candidate's out-of-fold predictions
   (after calibration when ``validation.calibration`` asks for it);
7. refit the best pipeline on the whole training part, score it on the holdout at that
   threshold, explain it (permutation importance on the holdout, TreeSHAP for LightGBM /
   XGBoost) and project a sample of transformed training rows to 2-D (PCA);
8. log it all to MLflow (parameters, per-fold and summary metrics, the model with its
   signature and an input example, lineage tags, the HTML report) and, with
   ``register_as``, register the model as ``challenger`` with the ``loopline.*`` tags
   that ``loopline evaluate`` and the server read.

Progress goes to ``on_progress(event, payload)``; nothing is printed. Events: ``data``,
``roles``, ``split``, ``candidate``, ``trial``, ``fold``, ``candidate_done``, ``best``,
``threshold``, ``holdout``, ``logged``, ``registered``, ``report``.

With ``target_transform: log`` (regression), every model is fitted on log(target) and
predicts on the original scale (:func:`~loopline.train.features.with_target_transform`):
the search scores its trials on log(target) (RMSE there is a relative error), while the
outer CV, the holdout and the report score the predictions on the original scale.

Note the search in step 4 sees every training row, so the outer-CV score of a heavily
tuned candidate is slightly optimistic; the holdout score is the unbiased one.

Example (not run here: it trains models and opens an MLflow store)::

    result = TrainingJob(config, "churn").run()
    result.best, result.cv_summary[result.best]["roc_auc"], result.threshold
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from loopline.config import LooplineConfig, TrainJobConfig
from loopline.config.training import CandidateConfig, Task
from loopline.errors import ConfigError, EvaluationError, TrainError
from loopline.evaluate.calibration import calibrate, reliability_curve
from loopline.evaluate.comparison import compare_models
from loopline.evaluate.cross_validation import CVResult, cross_validate
from loopline.evaluate.importance import permutation_importances
from loopline.evaluate.metrics import primary_metric, score_all, sklearn_scoring
from loopline.evaluate.report_data import CandidateOutcome, Projection, TrainReportData
from loopline.evaluate.splits import cv_splitter, holdout_split
from loopline.evaluate.threshold import ThresholdChoice, choose_threshold
from loopline.train.catalog import check_candidate, make_estimator
from loopline.train.data import TrainingData, load_training_frame
from loopline.train.explain import tree_contributions
from loopline.train.features import (
    build_pipeline,
    build_preprocessor,
    check_target_transform,
    with_target_transform,
)
from loopline.train.projection import DEFAULT_MAX_ROWS as DEFAULT_PROJECTION_ROWS
from loopline.train.projection import project_2d, projection_rows
from loopline.train.publish import publish
from loopline.train.ray_backend import executor_for
from loopline.train.roles import RoleAssignment, infer_roles
from loopline.train.search import Trial, search
from loopline.train.task import check_target, encode_target, infer_task

log = logging.getLogger(__name__)
TSNE_ROWS = 500

Progress = Callable[[str, dict[str, Any]], None]
Folds = list[tuple[NDArray[np.intp], NDArray[np.intp]]]


@dataclass
class TrainResult:
    """What a training run produced; ``cv_summary`` is candidate → metric → (mean, std)."""

    job: str
    task: Task
    primary_metric: str
    best: str
    cv_summary: dict[str, dict[str, tuple[float, float]]]
    holdout_metrics: dict[str, float]
    threshold: float | None
    model: Any
    report_data: TrainReportData
    report_path: Path | None
    mlflow_run_id: str
    model_name: str | None
    model_version: str | None
    duration_s: float


@dataclass(frozen=True)
class FixedFolds:
    """A splitter that hands out folds drawn once, so every candidate sees the same rows."""

    folds: Folds

    def split(self, X: Any = None, y: Any = None, groups: Any = None) -> Any:
        return iter(self.folds)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return len(self.folds)


@dataclass
class _Prepared:
    """The job's data after target checks, roles and the holdout split."""

    data: TrainingData
    task: Task
    classes: list[Any]
    roles: RoleAssignment
    X_train: pd.DataFrame
    y_train: NDArray[Any]
    X_holdout: pd.DataFrame
    y_holdout: NDArray[Any]
    groups_train: NDArray[Any] | None
    primary: str


class TrainingJob:
    """One training job of a project (see the module docstring)."""

    def __init__(
        self,
        config: LooplineConfig,
        name: str,
        job: TrainJobConfig | None = None,
        *,
        on_progress: Progress | None = None,
    ) -> None:
        if job is None:
            if name not in config.train:
                raise ConfigError(
                    f"no training job named {name!r}",
                    path=f"train.{name}",
                    hint=f"known jobs: {', '.join(sorted(config.train)) or 'none'}",
                )
            job = config.train[name]
        self.config = config
        self.name = name
        self.job = job
        self._on_progress = on_progress
        self._configs: dict[str, CandidateConfig] = {}

    def _progress(self, event: str, **payload: Any) -> None:
        if self._on_progress is not None:
            self._on_progress(event, payload)

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train, validate, explain, track and (with ``register_as``) register the model."""
        from threadpoolctl import threadpool_limits

        started = time.perf_counter()
        prep = self._prepare()
        with threadpool_limits(limits=1):
            outcomes, folds = self._candidates(prep)
            comparison = compare_models({o.name: o.cv for o in outcomes}, prep.primary)
            best = next(o for o in outcomes if o.name == comparison[0].model)
            self._progress(
                "best", candidate=best.name, metric=prep.primary, mean=comparison[0].mean
            )
            factory = self._factory(prep, best)
            oof_cv = best.cv
            if self.job.validation.calibration != "none" and prep.task != "regression":
                oof_cv = cross_validate(
                    factory, prep.X_train, prep.y_train, FixedFolds(folds), task=prep.task
                )
            choice = self._threshold(prep, oof_cv)
            model = factory().fit(prep.X_train, prep.y_train)
            report = self._evaluate(prep, model, outcomes, comparison, best, oof_cv, choice)
        result = self._track(prep, model, report, started)
        self._progress("done", duration_s=result.duration_s)
        return result

    def _prepare(self) -> _Prepared:
        job = self.job
        data = load_training_frame(self.config, job)
        self._progress("data", source=data.source, rows=data.rows, content_hash=data.content_hash)
        frame = data.frame
        if job.target not in frame.columns:  # check_target names the columns and a close match
            check_target(frame, job.target, job.task or "binary")
        task = job.task or infer_task(frame[job.target])
        frame = frame[check_target(frame, job.target, task)]
        y, classes = encode_target(frame[job.target], task)
        check_target_transform(y, job.target_transform, task=task, target=job.target)
        for candidate in self._candidate_configs(task):
            check_candidate(candidate.name, task)
        roles = infer_roles(frame, target=job.target, overrides=job.roles, drop=job.drop)
        summary = roles.summary()
        self._progress("roles", summary=summary, features=len(roles.features))
        v = job.validation
        groups = self._column(frame, v.group_column, "group_column")
        order = self._column(frame, v.time_column, "time_column")
        train, holdout = holdout_split(
            y,
            test_size=v.holdout,
            strategy=v.split,
            seed=job.seed,
            groups=groups,
            order=order,
            task=task,
        )
        if v.cv == "timeseries" and order is not None:  # time-series folds need time order
            train = train[np.argsort(order[train], kind="stable")]
        self._progress("split", n_train=len(train), n_holdout=len(holdout), strategy=v.split)
        X = frame[list(roles.features)]
        positive_rate = float(np.mean(y == 1)) if task == "binary" else None
        return _Prepared(
            data=data,
            task=task,
            classes=classes,
            roles=roles,
            X_train=X.iloc[train],
            y_train=y[train],
            X_holdout=X.iloc[holdout],
            y_holdout=y[holdout],
            groups_train=None if groups is None else groups[train],
            primary=primary_metric(task, positive_rate),
        )

    def _column(self, frame: pd.DataFrame, column: str | None, field: str) -> Any:
        if column is None:
            return None
        if column not in frame.columns:
            raise TrainError(
                f"validation.{field} names column {column!r}, which is not in the data",
                column=column,
                hint=f"columns: {', '.join(str(c) for c in frame.columns)}",
            )
        return frame[column].to_numpy()

    def _candidate_configs(self, task: Task) -> list[CandidateConfig]:
        if "candidates" not in self.job.model_fields_set and task == "regression":
            # The default pair is classifier-first; its regression twin is ridge + LightGBM.
            return [CandidateConfig(name="ridge"), CandidateConfig(name="lightgbm")]
        return list(self.job.candidates)

    # ---- candidates ------------------------------------------------------------------------

    def _candidates(self, prep: _Prepared) -> tuple[list[CandidateOutcome], Folds]:
        job, v = self.job, self.job.validation
        outer = cv_splitter(
            v.cv,
            task=prep.task,
            folds=v.folds,
            repeats=v.repeats,
            seed=job.seed,
            groups=prep.groups_train,
            y=prep.y_train,
        )
        folds: Folds = [
            (np.asarray(a, dtype=np.intp), np.asarray(b, dtype=np.intp))
            for a, b in outer.split(prep.X_train, prep.y_train, prep.groups_train)
        ]
        inner = cv_splitter(
            "repeated" if v.cv == "repeated" else v.cv,
            task=prep.task,
            folds=job.search.inner_folds,
            seed=job.seed,
        )
        configs = self._candidate_configs(prep.task)
        names = _unique_names([c.name for c in configs])
        self._configs = dict(zip(names, configs, strict=True))
        with executor_for(job.search) as executor:
            outcomes = [
                self._candidate(prep, key, candidate, folds, inner, executor)
                for key, candidate in zip(names, configs, strict=True)
            ]
        return outcomes, folds

    def _candidate(
        self,
        prep: _Prepared,
        key: str,
        candidate: CandidateConfig,
        folds: Folds,
        inner: Any,
        executor: Any,
    ) -> CandidateOutcome:
        job, v = self.job, self.job.validation
        self._progress(
            "candidate",
            candidate=key,
            index=list(self._configs).index(key),
            total=len(self._configs),
        )
        # The search fits the pipeline the shipped model wraps, on the target it learns.
        y_search = np.log(prep.y_train) if job.target_transform == "log" else prep.y_train
        found = search(
            candidate,
            prep.task,
            prep.X_train,
            y_search,
            pipeline_factory=lambda estimator: self._pipeline(prep, estimator),
            splitter=inner,
            scoring=sklearn_scoring(prep.primary),
            search=job.search,
            seed=job.seed,
            groups=prep.groups_train,
            class_weight=v.imbalance.class_weight,
            on_trial=functools.partial(self._trial, key),
            executor=executor,
        )
        cv = cross_validate(
            self._fold_factory(prep, key, candidate, found.best_params, len(folds)),
            prep.X_train,
            prep.y_train,
            FixedFolds(folds),
            task=prep.task,
        )
        mean, std = cv.summary()[prep.primary]
        self._progress(
            "candidate_done",
            candidate=key,
            metric=prep.primary,
            mean=mean,
            std=std,
            best_params=found.best_params,
        )
        return CandidateOutcome(
            name=key,
            best_params=found.best_params,
            cv=cv,
            trials=len(found.trials),
            search_seconds=found.duration_s,
        )

    def _trial(self, candidate: str, trial: Trial) -> None:
        self._progress(
            "trial",
            candidate=candidate,
            number=trial["number"],
            score=trial["score"],
            state=trial["state"],
            n_trials=self.job.search.n_trials,
        )

    def _pipeline(self, prep: _Prepared, estimator: Any) -> Any:
        job = self.job
        preprocessor = build_preprocessor(prep.roles, job.features, task=prep.task, seed=job.seed)
        resample = job.validation.imbalance.resample
        return build_pipeline(preprocessor, estimator, resample=resample, seed=job.seed)

    def _model(self, prep: _Prepared, estimator: Any) -> Any:
        """The pipeline as shipped: wrapped in the target transform when the job has one."""
        return with_target_transform(self._pipeline(prep, estimator), self.job.target_transform)

    def _estimator(
        self, prep: _Prepared, candidate: CandidateConfig, params: dict[str, Any]
    ) -> Any:
        return make_estimator(
            candidate.name,
            prep.task,
            params=params,
            seed=self.job.seed,
            class_weight=self.job.validation.imbalance.class_weight,
        )

    def _fold_factory(
        self,
        prep: _Prepared,
        key: str,
        candidate: CandidateConfig,
        params: dict[str, Any],
        folds: int,
    ) -> Callable[[], Any]:
        counter = iter(range(folds))

        def factory() -> Any:  # cross_validate calls it once per fold, in fold order
            self._progress("fold", candidate=key, fold=next(counter, -1), folds=folds)
            return self._model(prep, self._estimator(prep, candidate, params))

        return factory

    def _factory(self, prep: _Prepared, best: CandidateOutcome) -> Callable[[], Any]:
        """The best candidate's pipeline, wrapped in calibration when the job asks for it."""
        candidate = self._configs[best.name]
        method = self.job.validation.calibration

        def factory() -> Any:
            pipeline = self._model(prep, self._estimator(prep, candidate, best.best_params))
            if method != "none" and prep.task != "regression":
                return calibrate(pipeline, method, cv=self.job.search.inner_folds)
            return pipeline

        return factory

    # ---- threshold, holdout, explanations --------------------------------------------------

    def _threshold(self, prep: _Prepared, cv: CVResult) -> ThresholdChoice | None:
        if prep.task != "binary":
            return None
        covered = cv.covered
        choice = choose_threshold(
            prep.y_train[covered], cv.oof[covered], self.job.validation.threshold, pos_label=1
        )
        self._progress("threshold", **dataclasses.asdict(choice))
        return choice

    def _evaluate(
        self,
        prep: _Prepared,
        model: Any,
        outcomes: list[CandidateOutcome],
        comparison: list[Any],
        best: CandidateOutcome,
        oof_cv: CVResult,
        choice: ThresholdChoice | None,
    ) -> TrainReportData:
        job = self.job
        notes: list[str] = []
        threshold = choice.threshold if choice is not None else 0.5
        pred, metrics = _holdout_scores(prep, model, threshold, notes)
        self._progress("holdout", metrics=metrics)
        try:
            importances = permutation_importances(
                model, prep.X_holdout, prep.y_holdout, scoring=prep.primary, seed=job.seed
            )
        except EvaluationError as exc:
            importances = []
            notes.append(f"permutation importance skipped: {exc}")
        # A calibrated model wraps fitted copies of the pipeline; explain the first one.
        pipeline = _inner_pipeline(model)
        contributions = tree_contributions(pipeline, prep.X_train)
        positive = prep.classes[1] if prep.task == "binary" else None
        return TrainReportData(
            job=self.name,
            task=prep.task,
            target=job.target,
            data_source=prep.data.source,
            rows=prep.data.rows,
            n_train=len(prep.y_train),
            n_test=len(prep.y_holdout),
            primary_metric=prep.primary,
            candidates=outcomes,
            comparison=comparison,
            best=best.name,
            y_train=_labels(prep, prep.y_train),
            oof=oof_cv.oof,
            y_holdout=_labels(prep, prep.y_holdout),
            holdout_pred=pred,
            holdout_metrics=metrics,
            classes=prep.classes,
            positive_class=positive,
            roles=[(c, str(r), why) for c, r, why in prep.roles.summary()],
            threshold=choice,
            calibration=(
                reliability_curve(prep.y_holdout, pred) if prep.task == "binary" else None
            ),
            importances=importances,
            tree_contributions=contributions,
            projection=self._projection(prep, pipeline, notes),
            more_projections=[
                view
                for view in [self._projection(prep, pipeline, notes, method="tsne")]
                if view is not None
            ],
            notes=notes,
            costs=_costs(job, prep.task),
        )

    def _projection(
        self,
        prep: _Prepared,
        pipeline: Any,
        notes: list[str],
        *,
        method: Literal["pca", "tsne"] = "pca",
    ) -> Projection | None:
        """PCA of up to 2,000 training rows; t-SNE of up to 500 (it costs O(n²))."""
        steps = getattr(pipeline, "steps", None)
        if not steps or len(prep.y_train) < 3:
            return None
        limit = TSNE_ROWS if method == "tsne" else DEFAULT_PROJECTION_ROWS
        rows = projection_rows(len(prep.y_train), seed=self.job.seed, max_rows=limit)
        transformed = steps[0][1].transform(prep.X_train.iloc[rows])
        try:
            points = project_2d(transformed, method=method, seed=self.job.seed, max_rows=limit)
        except TrainError as exc:
            notes.append(f"{method} projection skipped: {exc}")
            return None
        return Projection(method=method, points=points, labels=_labels(prep, prep.y_train[rows]))

    # ---- tracking, registry, report --------------------------------------------------------

    def _track(
        self, prep: _Prepared, model: Any, report: TrainReportData, started: float
    ) -> TrainResult:
        job = self.job
        published = publish(
            self.config, self.name, job, prep.data, report, model, prep.X_train, self._progress
        )
        return TrainResult(
            job=self.name,
            task=prep.task,
            primary_metric=prep.primary,
            best=report.best,
            cv_summary={o.name: o.cv.summary() for o in report.candidates},
            holdout_metrics=report.holdout_metrics,
            threshold=None if report.threshold is None else report.threshold.threshold,
            model=model,
            report_data=report,
            report_path=published.report_path,
            mlflow_run_id=published.run_id,
            model_name=job.register_as,
            model_version=published.model_version,
            duration_s=time.perf_counter() - started,
        )


def _holdout_scores(
    prep: _Prepared, model: Any, threshold: float, notes: list[str]
) -> tuple[NDArray[Any], dict[str, float]]:
    X, y = prep.X_holdout, prep.y_holdout
    if prep.task == "regression":
        pred = np.asarray(model.predict(X), dtype=np.float64)
        return pred, score_all("regression", y, y_pred=pred)
    labels = np.arange(len(prep.classes))
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    if prep.task == "binary":
        proba = proba[:, 1]
    try:
        return proba, score_all(prep.task, y, y_proba=proba, threshold=threshold, labels=labels)
    except EvaluationError as exc:  # e.g. a class missing from a small holdout
        notes.append(f"holdout scored on labels only: {exc}")
        pred = (proba >= threshold).astype(int) if proba.ndim == 1 else proba.argmax(axis=1)
        return proba, score_all(prep.task, y, y_pred=pred, labels=labels)


def _labels(prep: _Prepared, codes: NDArray[Any]) -> NDArray[Any]:
    """Target codes as the class labels (what the report shows); values for regression."""
    if not prep.classes:
        return codes
    labels: NDArray[Any] = np.asarray(prep.classes, dtype=object)[codes]
    return labels


def _costs(job: TrainJobConfig, task: Task) -> tuple[float, float] | None:
    threshold = job.validation.threshold
    if task != "binary" or threshold.strategy != "cost":
        return None
    return (threshold.cost_fp, threshold.cost_fn)


def _inner_pipeline(model: Any) -> Any:
    """The fitted feature pipeline inside a calibrated or target-transformed model."""
    calibrated = getattr(model, "calibrated_classifiers_", None)
    if calibrated:
        return calibrated[0].estimator
    return getattr(model, "regressor_", model)  # TransformedTargetRegressor


def _unique_names(names: list[str]) -> list[str]:
    """Candidate keys: the name, with ``_2``, ``_3`` ... for repeats.

    >>> _unique_names(["lightgbm", "logistic", "lightgbm"])
    ['lightgbm', 'logistic', 'lightgbm_2']
    """
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return keys
