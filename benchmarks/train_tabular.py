"""Benchmark: loopline's default model selection on Telco churn and Ames, beside its anchors.

Run: ``make bench-train`` (or ``.venv/bin/python benchmarks/train_tabular.py``; ``--datasets
churn``, ``--cases plain,loopline``, ``--jobs 2``). Protocol (issue 3, section 7): all rows,
the same 5 folds for every case (stratified for churn, plain k-fold for Ames; seed 42), one
thread per model; the 5 folds of a case run in ``--jobs`` worker processes. Printed per case:
the mean ± std of each metric over the 5 folds, the wall seconds of the whole case (5 folds,
search included) and its ratio to the plain scikit-learn pipeline, then PASS / FAIL of
loopline against the issue's targets.

Cases, same folds, same run:
  plain     scikit-learn: impute + one-hot + scale, then LogisticRegression / Ridge(alpha=1)
  lightgbm  LightGBM with its defaults (one thread), categories as pandas ``category``
  flaml     FLAML AutoML per training fold, time budget = loopline's mean seconds per fold
            (skipped with a note when flaml is not installed: ``uv sync --group bench``)
  loopline  loopline's default job, nested: on each training fold, the default candidates
            (logistic + LightGBM for churn, ridge + LightGBM for Ames) are searched with the
            default search (Optuna TPE, default budget, inner 3-fold CV on that fold's
            training rows only), the candidate with the best inner score is refitted on the
            training fold and scored on the test fold.

How loopline is driven: through its building blocks (``infer_roles``, ``build_preprocessor``,
``build_pipeline``, ``search``, ``make_estimator``, ``with_target_transform``), with the
defaults of :class:`~loopline.config.training.TrainJobConfig`, not through ``TrainingJob``:
a job holds out 20% and searches on the rest, and its outer CV re-uses rows the search saw,
whereas here every test fold is unseen by everything fitted or tuned for it (nested CV).
Candidates are ranked by their inner search score (a job ranks them by an outer CV of its
training part). Each (fold, candidate) search is one task for the worker processes, which
spreads 10 unequal tasks over 2 processes better than 5 whole folds; a fold's seconds are
the sum of its tasks.

Ames: the protocol's target is log(Sale_Price). The anchors are fitted on log(y); loopline
runs with ``target_transform: log`` (trained on log(y), predictions on the dollar scale), and
the benchmark takes the log of its predictions: RMSE(log) = RMSE(log y, log ŷ).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

SEED = 42
FOLDS = 5
TARGETS = {
    "churn": {"roc_auc": (">=", 0.848), "pr_auc": (">=", 0.66), "wall_s": ("<=", 120.0)},
    "ames": {"rmse_log": ("<=", 0.122), "wall_s": ("<=", 120.0)},
}
CASES = ("plain", "lightgbm", "flaml", "loopline")


# ---- data and folds ----------------------------------------------------------------------


def load(dataset: str) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Features, target and task of a dataset, every row kept."""
    from loopline.datasets import load_frame

    if dataset == "churn":
        frame = load_frame("telco_churn")
        y = (frame["churn"] == "Yes").to_numpy(dtype=int)
        # rownames is the row key; wa_churn has no customer id column.
        return frame.drop(columns=["churn", "rownames"]), y, "binary"
    frame = load_frame("ames")
    y = frame["Sale_Price"].to_numpy(dtype=float)
    return frame.drop(columns=["Sale_Price", "rownames"]), y, "regression"


def folds_of(y: np.ndarray, task: str) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (
        StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
        if task == "binary"
        else KFold(FOLDS, shuffle=True, random_state=SEED)
    )
    return list(splitter.split(np.zeros(len(y)), y))


# ---- cases: each fits on the training fold and predicts the test fold ---------------------
# Binary cases return the positive-class probability; regression cases return log(price).


def _plain(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame, task: str, _: float) -> Any:
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                make_column_selector(dtype_include="number"),
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                make_column_selector(dtype_exclude="number"),
            ),
        ]
    )
    if task == "binary":
        model = make_pipeline(pre, LogisticRegression(max_iter=2000)).fit(X, y)
        return model.predict_proba(X_test)[:, 1]
    return make_pipeline(pre, Ridge(alpha=1.0)).fit(X, np.log(y)).predict(X_test)


def _as_categories(X: pd.DataFrame, X_test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Strings as pandas categories (LightGBM's native categorical input), levels from X."""
    X, X_test = X.copy(), X_test.copy()
    for column in X.columns:
        if not pd.api.types.is_numeric_dtype(X[column]):
            levels = sorted(X[column].dropna().astype(str).unique())
            X[column] = pd.Categorical(X[column].astype(str), categories=levels)
            X_test[column] = pd.Categorical(X_test[column].astype(str), categories=levels)
    return X, X_test


def _lightgbm(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame, task: str, _: float) -> Any:
    import lightgbm

    X, X_test = _as_categories(X, X_test)
    common = {"n_jobs": 1, "random_state": SEED, "verbose": -1}
    if task == "binary":
        return lightgbm.LGBMClassifier(**common).fit(X, y).predict_proba(X_test)[:, 1]
    return lightgbm.LGBMRegressor(**common).fit(X, np.log(y)).predict(X_test)


def _flaml(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame, task: str, budget: float) -> Any:
    from flaml import AutoML

    automl = AutoML()
    settings: dict[str, Any] = {
        "time_budget": budget,
        "n_jobs": 1,
        "seed": SEED,
        "verbose": 0,
        "log_file_name": "",
    }
    if task == "binary":
        automl.fit(X, y, task="classification", metric="roc_auc", **settings)
        return automl.predict_proba(X_test)[:, 1]
    automl.fit(X, np.log(y), task="regression", metric="rmse", **settings)
    return automl.predict(X_test)


def _loopline_setup(X: pd.DataFrame, y: np.ndarray, task: str) -> dict[str, Any]:
    """What TrainingJob derives from its config and the training rows."""
    from loopline.config.training import TrainJobConfig
    from loopline.evaluate.metrics import primary_metric, sklearn_scoring
    from loopline.evaluate.splits import cv_splitter
    from loopline.train.features import build_pipeline, build_preprocessor
    from loopline.train.roles import infer_roles

    transform = "log" if task == "regression" else "none"
    job = TrainJobConfig(file="bench.parquet", target="y", target_transform=transform)
    roles = infer_roles(X, drop=job.drop)
    positive_rate = float(np.mean(y == 1)) if task == "binary" else None

    def pipeline(estimator: Any) -> Any:
        pre = build_preprocessor(roles, job.features, task=task, seed=job.seed)  # type: ignore[arg-type]
        return build_pipeline(pre, estimator, resample=job.validation.imbalance.resample)

    return {
        "job": job,
        "pipeline": pipeline,
        "scoring": sklearn_scoring(primary_metric(task, positive_rate)),  # type: ignore[arg-type]
        "inner": cv_splitter(
            job.validation.cv,
            task=task,
            folds=job.search.inner_folds,
            seed=job.seed,  # type: ignore[arg-type]
        ),
    }


def loopline_candidates(task: str) -> tuple[str, ...]:
    """TrainingJob's default pair: logistic + LightGBM, or ridge + LightGBM for regression."""
    return ("ridge", "lightgbm") if task == "regression" else ("logistic", "lightgbm")


def loopline_search(X: pd.DataFrame, y: np.ndarray, task: str, name: str) -> tuple[Any, float]:
    """One candidate's default search on the training fold: (best params, inner score)."""
    from loopline.config.training import CandidateConfig
    from loopline.train.search import search

    setup = _loopline_setup(X, y, task)
    job = setup["job"]
    # The search fits what the shipped model fits: log(y) under the log transform.
    found = search(
        CandidateConfig(name=name),  # type: ignore[arg-type]
        task,  # type: ignore[arg-type]
        X,
        np.log(y) if job.target_transform == "log" else y,
        pipeline_factory=setup["pipeline"],
        splitter=setup["inner"],
        scoring=setup["scoring"],
        search=job.search,
        seed=job.seed,
    )
    return found.best_params, found.best_score


def loopline_refit(
    X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame, task: str, name: str, params: Any
) -> Any:
    """The chosen candidate refitted on the whole training fold, predicting the test fold."""
    from loopline.train.catalog import make_estimator
    from loopline.train.features import with_target_transform

    setup = _loopline_setup(X, y, task)
    job = setup["job"]
    estimator = make_estimator(name, task, params=params, seed=job.seed, class_weight=False)  # type: ignore[arg-type]
    model = with_target_transform(setup["pipeline"](estimator), job.target_transform).fit(X, y)
    if task == "binary":
        return model.predict_proba(X_test)[:, 1]
    return np.log(model.predict(X_test))


RUNNERS: dict[str, Callable[..., Any]] = {
    "plain": _plain,
    "lightgbm": _lightgbm,
    "flaml": _flaml,
}


def one_thread(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` in a worker process with every thread pool held to one thread."""
    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    with threadpool_limits(limits=1):
        out = fn(*args)
    return out, time.perf_counter() - started


def run_fold(
    case: str,
    X: pd.DataFrame,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    task: str,
    budget: float,
) -> tuple[np.ndarray, float]:
    """One fold of one anchor case."""
    pred, seconds = one_thread(RUNNERS[case], X.iloc[train], y[train], X.iloc[test], task, budget)
    return np.asarray(pred, dtype=float), seconds


def run_loopline(
    X: pd.DataFrame, y: np.ndarray, task: str, folds: list[Any], jobs: int
) -> list[tuple[np.ndarray, float]]:
    """loopline nested: every (fold, candidate) search is one task for the workers (a
    better spread over the processes than whole folds); then, per fold, the candidate with
    the best inner score is refitted on the training fold and predicts the test fold."""
    from joblib import Parallel, delayed

    names = loopline_candidates(task)
    tasks = [(f, name) for f in range(len(folds)) for name in names]
    with Parallel(n_jobs=jobs) as parallel:
        found = parallel(
            delayed(one_thread)(loopline_search, X.iloc[folds[f][0]], y[folds[f][0]], task, name)
            for f, name in tasks
        )
        best = {}
        seconds = dict.fromkeys(range(len(folds)), 0.0)
        spent = dict.fromkeys(names, 0.0)
        for (f, name), ((params, inner_score), took) in zip(tasks, found, strict=True):
            seconds[f] += took
            spent[name] += took
            if f not in best or inner_score > best[f][2]:
                best[f] = (name, params, inner_score)
        refits = parallel(
            delayed(one_thread)(
                loopline_refit, X.iloc[train], y[train], X.iloc[test], task, *best[f][:2]
            )
            for f, (train, test) in enumerate(folds)
        )
    chosen = ", ".join(f"{best[f][0]} ({best[f][2]:.4f})" for f in sorted(best))
    searched = ", ".join(f"{name} {took:.0f} s" for name, took in spent.items())
    print(f"    loopline chose per fold (inner score): {chosen}; search time {searched}")
    return [
        (np.asarray(pred, dtype=float), seconds[f] + took) for f, (pred, took) in enumerate(refits)
    ]


def score(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if task == "binary":
        return {"roc_auc": roc_auc_score(y, pred), "pr_auc": average_precision_score(y, pred)}
    return {"rmse_log": float(np.sqrt(np.mean((np.log(y) - pred) ** 2)))}


def run_case(
    case: str,
    X: pd.DataFrame,
    y: np.ndarray,
    task: str,
    folds: list[Any],
    budget: float,
    jobs: int,
) -> dict[str, Any]:
    from joblib import Parallel, delayed

    started = time.perf_counter()
    if case == "loopline":
        outputs = run_loopline(X, y, task, folds, jobs)
    else:
        outputs = Parallel(n_jobs=jobs)(
            delayed(run_fold)(case, X, y, train, test, task, budget) for train, test in folds
        )
    wall = time.perf_counter() - started
    per_fold = [
        score(task, y[test], pred) for (_, test), (pred, _) in zip(folds, outputs, strict=True)
    ]
    metrics = {
        name: (float(np.mean(values)), float(np.std(values)))
        for name in per_fold[0]
        for values in [[fold[name] for fold in per_fold]]
    }
    return {"metrics": metrics, "wall_s": wall, "fold_s": float(np.mean([s for _, s in outputs]))}


# ---- report ---------------------------------------------------------------------------------


def print_table(dataset: str, results: dict[str, dict[str, Any]]) -> None:
    names = list(next(iter(results.values()))["metrics"])
    base = results.get("plain")
    print(f"\n{dataset}")
    print(
        f"{'case':10}" + "".join(f"{n:>18}" for n in names) + f"{'wall s':>9}{'s/fold':>9}"
        f"{'wall/plain':>11}"
    )
    for case, r in results.items():
        cells = "".join(f"{m:>11.4f} ± {s:.3f}" for m, s in r["metrics"].values())
        ratio = f"{r['wall_s'] / base['wall_s']:.1f}x" if base else "-"
        print(f"{case:10}{cells}{r['wall_s']:9.1f}{r['fold_s']:9.1f}{ratio:>11}")


def check_targets(dataset: str, result: dict[str, Any]) -> bool:
    ok = True
    for name, (op, bound) in TARGETS[dataset].items():
        value = result["wall_s"] if name == "wall_s" else result["metrics"][name][0]
        passed = value >= bound if op == ">=" else value <= bound
        ok &= passed
        print(f"  {'PASS' if passed else 'FAIL'}  loopline {name} {value:.4f} {op} {bound}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="churn,ames")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (folds at once)")
    parser.add_argument(
        "--flaml-budget",
        type=float,
        default=None,
        help="FLAML seconds per fold (default: loopline's mean seconds per fold, else 20)",
    )
    args = parser.parse_args()
    os.environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    cases = [c for c in CASES if c in args.cases.split(",")]  # loopline before flaml's budget
    cases = sorted(cases, key=lambda c: c == "flaml")
    all_ok = True
    for dataset in args.datasets.split(","):
        X, y, task = load(dataset)
        folds = folds_of(y, task)
        print(
            f"{dataset}: {len(y):,} rows, {X.shape[1]} columns, {FOLDS} folds, seed {SEED}",
            flush=True,
        )
        results: dict[str, dict[str, Any]] = {}
        for case in cases:
            budget = args.flaml_budget or (
                results["loopline"]["fold_s"] if "loopline" in results else 20.0
            )
            if case == "flaml":
                try:
                    import flaml  # noqa: F401
                except ImportError:
                    print("  flaml: not installed (uv sync --group bench), skipped")
                    continue
            results[case] = run_case(case, X, y, task, folds, budget, args.jobs)
            print(f"  {case}: {results[case]['wall_s']:.1f} s", flush=True)
        results = {c: results[c] for c in CASES if c in results}
        print_table(dataset, results)
        if "loopline" in results:
            all_ok &= check_targets(dataset, results["loopline"])
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
