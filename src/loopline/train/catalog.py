"""The model catalog: one scikit-learn estimator per candidate name and task.

Every model runs on one thread (``n_jobs=1``; the search limits OpenMP / BLAS pools as
well) because on small shared machines parallel trees ran up to 100x slower under load;
parallelism belongs across folds or trials. Every model with randomness gets ``seed``.

Defaults (``params`` override them; anything not listed is the library's default):

======================  ==========================================  ===========================
name                    classification (binary, multiclass)         regression
======================  ==========================================  ===========================
logistic                LogisticRegression(C=1, max_iter=2000)      TrainError: use linear/ridge
linear                  TrainError: use logistic                    LinearRegression()
ridge                   LogisticRegression, L2 (l1_ratio=0, C=1)    Ridge(alpha=1)
lasso                   LogisticRegression, L1 (l1_ratio=1, C=1,    Lasso(alpha=1e-3,
                        liblinear binary / saga multiclass)         max_iter=5000)
elastic_net             LogisticRegression(l1_ratio=0.5, C=1,       ElasticNet(alpha=1e-3,
                        solver="saga")                              l1_ratio=0.5, max_iter=5000)
decision_tree           DecisionTreeClassifier(min_samples_leaf=5)  DecisionTreeRegressor(same)
random_forest           RandomForestClassifier(n_estimators=200)    RandomForestRegressor(same)
hist_gradient_boosting  HistGradientBoostingClassifier()            ...Regressor()
lightgbm                LGBMClassifier(n_estimators=300,            LGBMRegressor(same)
                        learning_rate=0.05, subsample=0.8,
                        subsample_freq=1, colsample_bytree=0.8,
                        deterministic, force_row_wise, verbose=-1)
xgboost                 XGBoostClassifier(n_estimators=300,         XGBRegressor(same)
                        learning_rate=0.05, max_depth=6,
                        subsample=0.8, colsample_bytree=0.8,
                        tree_method="hist")
======================  ==========================================  ===========================

For classification, ridge / lasso / elastic_net are the matching penalties of logistic
regression: a RidgeClassifier has no ``predict_proba``, which thresholds, calibration and
PR-AUC need. ``class_weight=True`` gives ``class_weight="balanced"`` (LightGBM and every
scikit-learn classifier compute it from the labels passed to ``fit``; XGBoost through
:class:`~loopline.train.xgboost_classifier.XGBoostClassifier`, which does the same with
sample weights), so weights always come from the training fold alone.

:func:`default_space` gives each model's search space in the ``search_space`` syntax of
:class:`~loopline.config.training.CandidateConfig` (parsed by
:mod:`loopline.train.search_space`).

>>> model = make_estimator("random_forest", "binary", params={"max_depth": 4}, seed=7,
...                        class_weight=True)
>>> p = model.get_params()
>>> p["n_jobs"], p["max_depth"], p["random_state"], p["class_weight"]
(1, 4, 7, 'balanced')
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, Literal, get_args

from loopline.config.training import CandidateName, Task
from loopline.errors import MissingDependencyError, TrainError

CANDIDATES: tuple[CandidateName, ...] = get_args(CandidateName)
TASKS: tuple[Task, ...] = get_args(Task)

_CLASSIFIERS_ONLY = {"logistic"}
_REGRESSORS_ONLY = {"linear"}
_LIGHTGBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "n_jobs": 1,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}
_XGBOOST_DEFAULTS: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "max_depth": 6,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "tree_method": "hist",
    "n_jobs": 1,
}


def is_supported(name: CandidateName, task: Task) -> bool:
    """Whether the catalog has a model called ``name`` for ``task``.

    >>> is_supported("linear", "binary"), is_supported("linear", "regression")
    (False, True)
    """
    if name in _CLASSIFIERS_ONLY:
        return task != "regression"
    if name in _REGRESSORS_ONLY:
        return task == "regression"
    return name in CANDIDATES


def check_candidate(name: str, task: str) -> None:
    """Raise :class:`TrainError` with a hint when ``name`` cannot serve ``task``."""
    if task not in TASKS:
        raise TrainError(f"unknown task {task!r}", task=task, hint=f"use one of {', '.join(TASKS)}")
    if name not in CANDIDATES:
        raise TrainError(
            f"unknown candidate {name!r}",
            candidate=name,
            hint=f"use one of {', '.join(CANDIDATES)}",
        )
    if name in _CLASSIFIERS_ONLY and task == "regression":
        raise TrainError(
            "logistic regression is a classifier and the task is regression",
            candidate=name,
            task=task,
            hint="use 'linear', 'ridge', 'lasso' or 'elastic_net' for regression",
        )
    if name in _REGRESSORS_ONLY and task != "regression":
        raise TrainError(
            f"linear regression cannot classify and the task is {task}",
            candidate=name,
            task=task,
            hint="use 'logistic' (or 'ridge' / 'lasso' / 'elastic_net', which are "
            "penalised logistic regressions for classification)",
        )


def make_estimator(
    name: CandidateName, task: Task, *, params: dict[str, Any], seed: int, class_weight: bool
) -> Any:
    """A fresh, unfitted estimator for candidate ``name`` on ``task``.

    ``params`` are the estimator's own parameter names and override the defaults above.
    Unknown names or a missing optional library end in a :class:`TrainError` /
    :class:`MissingDependencyError`.

    >>> make_estimator("ridge", "regression", params={"alpha": 3.0}, seed=0,
    ...                class_weight=False)
    Ridge(alpha=3.0, random_state=0)
    """
    check_candidate(name, task)
    if class_weight and task == "regression":
        raise TrainError(
            "class weights need a classification task",
            candidate=name,
            task=task,
            hint="set validation.imbalance.class_weight to false for regression",
        )
    estimator = _base_estimator(name, task, seed=seed, balanced=class_weight)
    if params:
        valid = set(estimator.get_params(deep=False))
        # LightGBM / XGBoost accept any native parameter through **kwargs.
        open_ended = name in ("lightgbm", "xgboost")
        unknown = sorted(set(params) - valid)
        if unknown and not open_ended:
            raise TrainError(
                f"unknown parameter(s) {', '.join(unknown)} for {type(estimator).__name__}",
                candidate=name,
                hint=f"valid parameters: {', '.join(sorted(valid))}",
            )
        estimator.set_params(**params)
    return estimator


def _log_float(low: float, high: float) -> dict[str, Any]:
    return {"float": [low, high], "log": True}


def _log_int(low: int, high: int) -> dict[str, Any]:
    return {"int": [low, high], "log": True}


_L1_RATIO = {"float": [0.05, 0.95]}
_BOOSTING_SPACE: dict[str, Any] = {
    "n_estimators": _log_int(100, 1500),
    "learning_rate": _log_float(0.01, 0.2),
    "subsample": {"float": [0.5, 1.0]},
    "colsample_bytree": {"float": [0.3, 1.0]},
    "reg_alpha": _log_float(1e-8, 10.0),
    "reg_lambda": _log_float(1e-8, 10.0),
}
_TREE_SPACES: dict[str, dict[str, Any]] = {
    "decision_tree": {"max_depth": {"int": [2, 16]}, "min_samples_leaf": _log_int(1, 50)},
    "random_forest": {
        "n_estimators": {"int": [100, 500]},
        "max_features": {"float": [0.1, 1.0]},
        "min_samples_leaf": _log_int(1, 20),
        "max_depth": {"choice": [None, 8, 16, 32]},
    },
    "hist_gradient_boosting": {
        "learning_rate": _log_float(0.01, 0.3),
        "max_iter": _log_int(50, 500),
        "max_leaf_nodes": _log_int(8, 128),
        "min_samples_leaf": _log_int(5, 100),
        "l2_regularization": _log_float(1e-8, 10.0),
    },
    "lightgbm": {
        **_BOOSTING_SPACE,
        "n_estimators": _log_int(50, 1000),
        "num_leaves": _log_int(4, 64),
        "min_child_samples": _log_int(5, 100),
    },
    "xgboost": {
        **_BOOSTING_SPACE,
        "max_depth": {"int": [2, 10]},
        "min_child_weight": _log_float(0.5, 20.0),
    },
}


def default_space(name: CandidateName, task: Task) -> dict[str, Any]:
    """The default search space of ``name`` for ``task``, in ``search_space`` syntax.

    Linear models search their penalty (``C`` for classifiers, ``alpha`` for regressors,
    plus ``l1_ratio`` for elastic net); plain linear regression has nothing to tune
    (``{}``). Tree models search depth / leaf size; boosting models also the number of
    trees, learning rate, row / column subsampling and L1 / L2 penalties.

    >>> default_space("elastic_net", "regression")
    {'alpha': {'float': [1e-05, 10.0], 'log': True}, 'l1_ratio': {'float': [0.05, 0.95]}}
    """
    check_candidate(name, task)
    if name in _TREE_SPACES:
        return copy.deepcopy(_TREE_SPACES[name])
    if task != "regression":
        space: dict[str, Any] = {"C": _log_float(1e-3, 100.0)}
    elif name == "linear":
        space = {}
    elif name == "ridge":
        space = {"alpha": _log_float(1e-3, 1e3)}
    else:
        space = {"alpha": _log_float(1e-5, 10.0)}
    if name == "elastic_net":
        space["l1_ratio"] = copy.deepcopy(_L1_RATIO)
    return space


def _base_estimator(name: CandidateName, task: Task, *, seed: int, balanced: bool) -> Any:
    classify = task != "regression"
    weight: Literal["balanced"] | None = "balanced" if balanced else None
    if name in ("logistic", "ridge", "lasso", "elastic_net") and classify:
        return _logistic(name, task, seed=seed, weight=weight)
    if name in ("linear", "ridge", "lasso", "elastic_net"):
        return _linear_regressor(name, seed=seed)
    if name in ("decision_tree", "random_forest", "hist_gradient_boosting"):
        return _sklearn_tree(name, classify, seed=seed, weight=weight)
    if name == "lightgbm":
        lightgbm = _optional("lightgbm")
        if classify:
            return lightgbm.LGBMClassifier(
                **_LIGHTGBM_DEFAULTS, random_state=seed, class_weight=weight
            )
        return lightgbm.LGBMRegressor(**_LIGHTGBM_DEFAULTS, random_state=seed)
    # xgboost, the last name check_candidate lets through
    if classify:
        _optional("xgboost")
        from loopline.train.xgboost_classifier import XGBoostClassifier

        return XGBoostClassifier(**_XGBOOST_DEFAULTS, random_state=seed, class_weight=weight)
    return _optional("xgboost").XGBRegressor(**_XGBOOST_DEFAULTS, random_state=seed)


def _logistic(name: str, task: Task, *, seed: int, weight: Literal["balanced"] | None) -> Any:
    from sklearn.linear_model import LogisticRegression

    l1_ratio = {"logistic": 0.0, "ridge": 0.0, "lasso": 1.0, "elastic_net": 0.5}[name]
    solver = "lbfgs"
    if name == "lasso":
        solver = "liblinear" if task == "binary" else "saga"
    elif name == "elastic_net":
        solver = "saga"
    return LogisticRegression(
        C=1.0,
        l1_ratio=l1_ratio,
        solver=solver,
        max_iter=2000,
        class_weight=weight,
        random_state=seed,
    )


def _linear_regressor(name: str, *, seed: int) -> Any:
    from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, Ridge

    if name == "linear":
        return LinearRegression()
    if name == "ridge":
        return Ridge(alpha=1.0, random_state=seed)
    if name == "lasso":
        return Lasso(alpha=1e-3, max_iter=5000, random_state=seed)
    return ElasticNet(alpha=1e-3, l1_ratio=0.5, max_iter=5000, random_state=seed)


def _sklearn_tree(
    name: str, classify: bool, *, seed: int, weight: Literal["balanced"] | None
) -> Any:
    from sklearn import ensemble, tree

    if name == "decision_tree":
        if classify:
            return tree.DecisionTreeClassifier(
                min_samples_leaf=5, class_weight=weight, random_state=seed
            )
        return tree.DecisionTreeRegressor(min_samples_leaf=5, random_state=seed)
    if name == "random_forest":
        if classify:
            return ensemble.RandomForestClassifier(
                n_estimators=200, n_jobs=1, class_weight=weight, random_state=seed
            )
        return ensemble.RandomForestRegressor(n_estimators=200, n_jobs=1, random_state=seed)
    if classify:
        return ensemble.HistGradientBoostingClassifier(class_weight=weight, random_state=seed)
    return ensemble.HistGradientBoostingRegressor(random_state=seed)


def _optional(package: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependencyError(package, "train") from exc
