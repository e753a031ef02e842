"""Hyper-parameter search for one candidate, cross-validated on fixed folds.

Methods (``SearchConfig.method``):

- ``none``: the candidate's defaults plus its ``params``, scored by cross-validation.
- ``grid``: every point of the grid (:func:`~loopline.train.search_space.grid_points`:
  all choices, three points per range); a grid larger than ``n_trials`` is cut to a
  seeded random subset of ``n_trials`` points, so ``n_trials`` caps every method.
  A space of *d* searched parameters gets at most ``10·d`` trials (``TRIALS_PER_DIMENSION``):
  a one-parameter space is mapped out long before 30.
- ``random``: ``n_trials`` points drawn with ``seed``.
- ``optuna``: TPE (``TPESampler(seed=seed)``, one study thread: TPE is reproducible under
  a seed only with ``n_jobs=1``) and, with ``pruning``, a ``MedianPruner`` fed the running
  mean after every fold, so a trial that trails the median of earlier trials at the same
  fold stops early (state ``pruned``).

Every trial is scored on the same folds (the splitter is split once), each fold fitted
on its training part only. ``timeout_s`` is checked between trials: a started trial
finishes, and at least one trial always runs. With the same seed and no timeout, the
same trials and the same best score come back. All thread pools (OpenMP, BLAS) are held
to one thread while searching; :class:`FoldScorer` evaluates one parameter set and is
picklable, so trials can be sent to other processes or a cluster.

With an ``executor`` (an :class:`Executor`, such as
:class:`~loopline.train.ray_backend.RayExecutor`), trials run in parallel through
``executor.map``, one parameter set per call. Grid and random search send all their
points at once (in batches of ``executor.parallelism`` when ``timeout_s`` is set, checked
between batches) and return the same trials, in the same order, with the same scores as
without an executor. Optuna asks ``executor.parallelism`` trials at a time
(``study.ask()``), scores them together and tells the study the results: reproducible for
a given seed and batch size, but not the trials of the sequential study, as a batch is
sampled without knowing its neighbours' results; pruning does not apply (every trial runs
all its folds).

Parameter names are the estimator's own (``num_leaves``); they are set on the last step
of the pipeline (``model__num_leaves``). The space is ``candidate.search_space`` or, when
that is None, :func:`~loopline.train.catalog.default_space` without the parameters fixed
in ``candidate.params``.

>>> from sklearn.datasets import load_breast_cancer
>>> from sklearn.model_selection import StratifiedKFold
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> from loopline.config.training import CandidateConfig, SearchConfig
>>> X, y = load_breast_cancer(return_X_y=True)
>>> result = search(CandidateConfig(name="logistic"), "binary", X, y,
...                 pipeline_factory=lambda model: make_pipeline(StandardScaler(), model),
...                 splitter=StratifiedKFold(3, shuffle=True, random_state=0),
...                 scoring="roc_auc", search=SearchConfig(method="random", n_trials=3),
...                 seed=0)
>>> len(result.trials), result.best_score > 0.98, sorted(result.best_params)
(3, True, ['C'])
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, TypeVar

import numpy as np

from loopline.config.training import CandidateConfig, SearchConfig, Task
from loopline.errors import LooplineError, MissingDependencyError, TrainError
from loopline.train.catalog import default_space, make_estimator
from loopline.train.search_space import Dimension, grid_points, parse_space, sample_points

logger = logging.getLogger(__name__)
TRIALS_PER_DIMENSION = 10
"""A space of d searched parameters gets at most 10·d trials, whatever ``n_trials`` says."""

TrialState = Literal["complete", "pruned", "failed"]
FoldCallback = Callable[[int, list[float]], None]
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Executor(Protocol):
    """Runs one function over many items, elsewhere, and returns the results in order.

    ``parallelism`` is how many calls run at once (the Optuna batch size).
    """

    parallelism: int

    def map(self, fn: Callable[[ItemT], ResultT], items: Sequence[ItemT]) -> list[ResultT]: ...


class Trial(TypedDict):
    """One evaluated parameter set; ``score`` is the mean over the folds it ran."""

    number: int
    params: dict[str, Any]
    score: float | None
    fold_scores: list[float]
    duration_s: float
    state: TrialState


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`search`.

    ``best_params`` are ``candidate.params`` updated with the best trial's values: pass
    them to :func:`~loopline.train.catalog.make_estimator` to refit the winner.
    ``trials[i]["params"]`` hold only the searched values.
    """

    best_params: dict[str, Any]
    best_score: float
    trials: list[Trial]
    duration_s: float
    method: str


@dataclass
class FoldScorer:
    """Scores one parameter set on fixed folds: ``scorer(params) -> fold scores``.

    ``on_fold(fold_index, scores_so_far)`` is called after every fold (Optuna's pruning
    hook raises from it to stop the trial).
    """

    template: Any
    X: Any
    y: Any
    folds: Sequence[tuple[np.ndarray, np.ndarray]]
    scorer: Callable[..., float]

    def __call__(self, params: dict[str, Any], on_fold: FoldCallback | None = None) -> list[float]:
        from sklearn.base import clone

        scores: list[float] = []
        for index, (train, test) in enumerate(self.folds):
            try:
                model = clone(self.template).set_params(**_on_last_step(self.template, params))
                model.fit(_rows(self.X, train), _rows(self.y, train))
                score = float(self.scorer(model, _rows(self.X, test), _rows(self.y, test)))
            except LooplineError:
                raise
            except Exception as exc:
                raise TrainError(
                    f"fitting failed on fold {index} with params {params}: {exc}",
                    fold=index,
                    hint="check the candidate's params and search_space",
                ) from exc
            scores.append(score)
            if on_fold is not None:
                on_fold(index, list(scores))
        return scores


@dataclass(frozen=True)
class _TimedScorer:
    """A :class:`FoldScorer` call that also returns its duration (for executors)."""

    scorer: FoldScorer

    def __call__(self, params: dict[str, Any]) -> tuple[list[float], float]:
        started = time.perf_counter()
        scores = self.scorer(params)
        return scores, time.perf_counter() - started


def search(
    candidate: CandidateConfig,
    task: Task,
    X: Any,
    y: Any,
    *,
    pipeline_factory: Callable[[Any], Any],
    splitter: Any,
    scoring: str | Callable[..., float],
    search: SearchConfig,
    seed: int,
    groups: Any = None,
    class_weight: bool = False,
    on_trial: Callable[[Trial], None] | None = None,
    executor: Executor | None = None,
) -> SearchResult:
    """Search ``candidate``'s space by ``search.method``; see the module docstring.

    ``pipeline_factory`` wraps an estimator into the full pipeline (features + model);
    ``splitter`` is a scikit-learn CV splitter, split once with ``groups``; ``scoring`` a
    scikit-learn scorer name (``roc_auc``, ``neg_root_mean_squared_error`` ...) or
    scorer, greater is better; ``on_trial`` is told about each finished trial;
    ``executor`` runs the trials in parallel (see the module docstring).
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    fixed = dict(candidate.params)
    dims = parse_space(_space(candidate, task, fixed))
    estimator = make_estimator(
        candidate.name, task, params=fixed, seed=seed, class_weight=class_weight
    )
    scorer = FoldScorer(
        template=pipeline_factory(estimator),
        X=X,
        y=y,
        folds=_split(splitter, X, y, groups),
        scorer=_scorer(scoring),
    )
    method = search.method if dims else "none"
    if dims and search.n_trials > TRIALS_PER_DIMENSION * len(dims):
        # A one-parameter space (ridge's alpha) is mapped out long before 30 trials.
        search = search.model_copy(update={"n_trials": TRIALS_PER_DIMENSION * len(dims)})
    trials: list[Trial] = []

    def record(trial: Trial) -> None:
        trials.append(trial)
        logger.debug("%s trial %d: %s", candidate.name, trial["number"], trial)
        if on_trial is not None:
            on_trial(trial)

    with threadpool_limits(limits=1):
        if method == "optuna" and executor is not None:
            _run_optuna_batches(executor, scorer, dims, search, seed, record)
        elif method == "optuna":
            _run_optuna(scorer, dims, search, seed, record)
        elif executor is not None:
            points = _points(method, dims, search, seed)
            _run_point_batches(executor, scorer, points, search.timeout_s, record)
        else:
            _run_points(scorer, _points(method, dims, search, seed), search.timeout_s, record)
    best = _best(trials, candidate.name)
    duration = time.perf_counter() - started
    logger.info(
        "%s: %s search, %d trials, best %.4f in %.1f s",
        candidate.name,
        method,
        len(trials),
        best["score"],
        duration,
    )
    return SearchResult(
        best_params={**fixed, **best["params"]},
        best_score=float(best["score"]),  # type: ignore[arg-type]
        trials=trials,
        duration_s=duration,
        method=method,
    )


def _space(candidate: CandidateConfig, task: Task, fixed: dict[str, Any]) -> dict[str, Any]:
    if candidate.search_space is None:
        space = default_space(candidate.name, task)
        return {name: spec for name, spec in space.items() if name not in fixed}
    both = sorted(set(candidate.search_space) & set(fixed))
    if both:
        raise TrainError(
            f"{', '.join(both)} both fixed in params and searched in search_space",
            candidate=candidate.name,
            hint="keep each parameter in one of 'params' or 'search_space'",
        )
    return dict(candidate.search_space)


def _split(splitter: Any, X: Any, y: Any, groups: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(X, y, groups)]
    except (ValueError, TypeError) as exc:
        raise TrainError(
            f"the cross-validation splitter failed: {exc}",
            hint="check the folds and the group column against the data",
        ) from exc


def _scorer(scoring: str | Callable[..., float]) -> Callable[..., float]:
    if callable(scoring):
        return scoring
    from sklearn.metrics import get_scorer

    try:
        return get_scorer(scoring)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise TrainError(
            f"unknown scoring {scoring!r}",
            hint="use a scikit-learn scorer name such as roc_auc, average_precision, "
            "f1_macro, neg_root_mean_squared_error (see sklearn.metrics.get_scorer_names())",
        ) from exc


def _points(
    method: str, dims: dict[str, Dimension], config: SearchConfig, seed: int
) -> list[dict[str, Any]]:
    if method == "none":
        return [{}]
    if method == "random":
        return sample_points(dims, n=config.n_trials, seed=seed)
    grid = grid_points(dims)
    if len(grid) <= config.n_trials:
        return grid
    logger.info("grid of %d points cut to %d (n_trials)", len(grid), config.n_trials)
    keep = np.sort(np.random.default_rng(seed).permutation(len(grid))[: config.n_trials])
    return [grid[i] for i in keep]


def _run_points(
    scorer: FoldScorer,
    points: list[dict[str, Any]],
    timeout_s: float | None,
    record: Callable[[Trial], None],
) -> None:
    started = time.perf_counter()
    for number, params in enumerate(points):
        if number and timeout_s is not None and time.perf_counter() - started >= timeout_s:
            logger.info("search stopped by timeout_s=%s after %d trials", timeout_s, number)
            return
        trial_started = time.perf_counter()
        scores = scorer(params)
        record(_trial(number, params, scores, trial_started, "complete"))


def _run_point_batches(
    executor: Executor,
    scorer: FoldScorer,
    points: list[dict[str, Any]],
    timeout_s: float | None,
    record: Callable[[Trial], None],
) -> None:
    started = time.perf_counter()
    size = len(points) if timeout_s is None else max(1, executor.parallelism)
    for first in range(0, len(points), size):
        if first and timeout_s is not None and time.perf_counter() - started >= timeout_s:
            logger.info("search stopped by timeout_s=%s after %d trials", timeout_s, first)
            return
        batch = points[first : first + size]
        outcomes = executor.map(_TimedScorer(scorer), batch)
        for number, params, (scores, duration) in zip(
            range(first, first + len(batch)), batch, outcomes, strict=True
        ):
            record(_trial(number, params, scores, 0.0, "complete", duration=duration))


def _quiet_optuna() -> Any:
    """Optuna, imported on first use with its per-trial INFO logging off."""
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependencyError("optuna", "train") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _run_optuna_batches(
    executor: Executor,
    scorer: FoldScorer,
    dims: dict[str, Dimension],
    config: SearchConfig,
    seed: int,
    record: Callable[[Trial], None],
) -> None:
    optuna = _quiet_optuna()
    from loopline.train.search_space import suggest

    if config.pruning:
        logger.debug("pruning does not apply to trials run by an executor")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    started = time.perf_counter()
    size = max(1, executor.parallelism)
    done = 0
    while done < config.n_trials:
        elapsed = time.perf_counter() - started
        if done and config.timeout_s is not None and elapsed >= config.timeout_s:
            logger.info("search stopped by timeout_s=%s after %d trials", config.timeout_s, done)
            return
        asked = [study.ask() for _ in range(min(size, config.n_trials - done))]
        batch = [{name: suggest(trial, name, dim) for name, dim in dims.items()} for trial in asked]
        outcomes = executor.map(_TimedScorer(scorer), batch)
        for trial, params, (scores, duration) in zip(asked, batch, outcomes, strict=True):
            outcome = _trial(trial.number, params, scores, 0.0, "complete", duration=duration)
            if outcome["score"] is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, outcome["score"])
            record(outcome)
        done += len(asked)


def _run_optuna(
    scorer: FoldScorer,
    dims: dict[str, Dimension],
    config: SearchConfig,
    seed: int,
    record: Callable[[Trial], None],
) -> None:
    optuna = _quiet_optuna()
    from loopline.train.search_space import suggest

    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
        if config.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner
    )

    def objective(trial: Any) -> float:  # an optuna.Trial
        params = {name: suggest(trial, name, dim) for name, dim in dims.items()}
        started = time.perf_counter()

        def on_fold(index: int, scores: list[float]) -> None:
            trial.report(float(np.mean(scores)), index)
            if trial.should_prune():
                record(_trial(trial.number, params, scores, started, "pruned"))
                raise optuna.TrialPruned()

        fold_scores = scorer(params, on_fold)
        outcome = _trial(trial.number, params, fold_scores, started, "complete")
        record(outcome)
        return outcome["score"] if outcome["score"] is not None else math.nan

    study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout_s, n_jobs=1)


def _trial(
    number: int,
    params: dict[str, Any],
    scores: list[float],
    started: float,
    state: TrialState,
    *,
    duration: float | None = None,
) -> Trial:
    score = float(np.mean(scores)) if scores else math.nan
    finite = math.isfinite(score)
    return Trial(
        number=number,
        params={name: _plain(value) for name, value in params.items()},
        score=score if finite else None,
        fold_scores=[float(s) for s in scores],
        duration_s=time.perf_counter() - started if duration is None else duration,
        state=state if finite else "failed",
    )


def _best(trials: list[Trial], name: str) -> Trial:
    complete = [t for t in trials if t["state"] == "complete" and t["score"] is not None]
    if not complete:
        raise TrainError(
            f"no trial of {name} finished with a finite score ({len(trials)} trials)",
            candidate=name,
            hint="a fold may hold a single class (use stratified folds) or the budget is "
            "too small; check timeout_s and the data",
        )
    return max(complete, key=lambda t: t["score"] if t["score"] is not None else -math.inf)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _rows(data: Any, index: np.ndarray) -> Any:
    if hasattr(data, "iloc"):
        return data.iloc[index]
    return data[index]


def _on_last_step(template: Any, params: dict[str, Any]) -> dict[str, Any]:
    steps = getattr(template, "steps", None)
    if not steps:
        return params
    return {f"{steps[-1][0]}__{name}": value for name, value in params.items()}
