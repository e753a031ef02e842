"""The model catalog: every candidate fits, predicts, runs on one thread and is seeded."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from loopline.config.training import CandidateName, Task
from loopline.errors import MissingDependencyError, TrainError
from loopline.train.catalog import (
    CANDIDATES,
    TASKS,
    default_space,
    is_supported,
    make_estimator,
)
from loopline.train.search_space import parse_space, sample_points


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # As in search: HistGradientBoosting's OpenMP would otherwise take every core.
    with threadpool_limits(limits=1):
        yield


COMBOS = [(name, task) for name in CANDIDATES for task in TASKS if is_supported(name, task)]


def _data(task: Task, *, labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if task == "regression":
        X, y = make_regression(n_samples=120, n_features=6, noise=5.0, random_state=0)
        return StandardScaler().fit_transform(X), y
    classes = 2 if task == "binary" else 3
    X, y = make_classification(
        n_samples=150, n_features=6, n_informative=4, n_classes=classes, random_state=0
    )
    X = StandardScaler().fit_transform(X)
    if labels:  # string labels, as a warehouse column would hold them
        return X, np.array(["no", "yes", "maybe"])[y]
    return X, y


def _make(name: CandidateName, task: Task, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"params": {}, "seed": 3, "class_weight": False, **kwargs}
    return make_estimator(name, task, **options)


def test_every_supported_combination_is_listed() -> None:
    # logistic is classification only, linear regression only; everything else serves all.
    assert len(COMBOS) == len(CANDIDATES) * len(TASKS) - 3


@pytest.mark.parametrize(("name", "task"), COMBOS)
def test_every_candidate_fits_predicts_clones_and_pickles(name: CandidateName, task: Task) -> None:
    X, y = _data(task)
    unfitted = _make(name, task)
    assert clone(unfitted).get_params() == unfitted.get_params()
    model = unfitted.fit(X, y)
    predicted = model.predict(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), predicted)
    assert predicted.shape == (len(y),)
    if task == "regression":
        assert model.score(X, y) > 0.5  # R² on its training data: it learned something
    else:
        proba = model.predict_proba(X)
        assert proba.shape == (len(y), len(set(y)))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        assert set(predicted) <= set(y)
        assert model.score(X, y) > 0.6


@pytest.mark.parametrize(("name", "task"), COMBOS)
def test_every_candidate_runs_on_one_thread_with_the_seed(name: CandidateName, task: Task) -> None:
    params = _make(name, task).get_params()
    if name in ("random_forest", "lightgbm", "xgboost"):
        assert params["n_jobs"] == 1  # the multi-threaded libraries must be pinned
    else:  # no threads of their own (HistGradientBoosting's OpenMP is held by the search)
        assert params.get("n_jobs") is None
    if "random_state" in params:
        assert params["random_state"] == 3


@pytest.mark.parametrize(("name", "task"), [c for c in COMBOS if c[1] != "regression"])
def test_classifiers_take_string_labels(name: CandidateName, task: Task) -> None:
    X, y = _data(task, labels=True)
    model = _make(name, task, class_weight=True).fit(X, y)
    assert sorted(model.classes_.tolist()) == sorted(set(y.tolist()))
    assert set(model.predict(X).tolist()) <= set(y.tolist())


def test_same_seed_same_model_different_seed_different_model() -> None:
    X, y = _data("binary")
    first = _make("random_forest", "binary", seed=1).fit(X, y).predict_proba(X)
    again = _make("random_forest", "binary", seed=1).fit(X, y).predict_proba(X)
    other = _make("random_forest", "binary", seed=2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", [n for n in CANDIDATES if is_supported(n, "binary")])
def test_class_weight_is_balanced_for_every_classifier(name: CandidateName) -> None:
    assert _make(name, "binary", class_weight=True).get_params()["class_weight"] == "balanced"
    assert _make(name, "binary").get_params()["class_weight"] is None


@pytest.mark.parametrize("name", ["logistic", "lightgbm", "xgboost"])
def test_class_weight_shifts_probability_to_the_rare_class(name: CandidateName) -> None:
    X, y = make_classification(
        n_samples=400,
        n_features=5,
        n_informative=3,
        weights=[0.85, 0.15],
        class_sep=0.5,
        flip_y=0.1,
        random_state=1,
    )
    train, test = slice(0, 250), slice(250, None)
    rare = {}
    for weighted in (False, True):
        model = _make(name, "binary", class_weight=weighted).fit(X[train], y[train])
        rare[weighted] = model.predict_proba(X[test])[:, 1].mean()
    # on held-out rows the rare class gets clearly more probability mass (the operating
    # point moves; whether ranking improves is a separate question)
    assert rare[True] > 1.2 * rare[False]


def test_xgboost_balanced_weights_come_from_the_labels_passed_to_fit() -> None:
    from xgboost import XGBClassifier

    X, y = make_classification(n_samples=200, n_features=5, weights=[0.8, 0.2], random_state=2)
    ours = _make("xgboost", "binary", class_weight=True).fit(X, y)
    params = {k: v for k, v in ours.get_params().items() if k != "class_weight"}
    reference = XGBClassifier(**params)
    reference.fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_allclose(ours.predict_proba(X), reference.predict_proba(X), rtol=1e-6)


def test_params_override_defaults() -> None:
    model = _make("lightgbm", "regression", params={"num_leaves": 7, "n_estimators": 20})
    params = model.get_params()
    assert (params["num_leaves"], params["n_estimators"], params["n_jobs"]) == (7, 20, 1)


def test_unknown_parameter_names_the_valid_ones() -> None:
    with pytest.raises(TrainError, match="unknown parameter") as caught:
        _make("random_forest", "binary", params={"n_trees": 10})
    assert "n_estimators" in (caught.value.hint or "")
    assert caught.value.fields["candidate"] == "random_forest"


@pytest.mark.parametrize(
    ("name", "task", "hint_word"),
    [
        ("logistic", "regression", "ridge"),
        ("linear", "binary", "logistic"),
        ("linear", "multiclass", "logistic"),
        ("svm", "binary", "lightgbm"),
        ("ridge", "ranking", "regression"),
    ],
)
def test_incompatible_or_unknown_combinations_fail_clearly(
    name: Any, task: Any, hint_word: str
) -> None:
    with pytest.raises(TrainError) as caught:
        _make(name, task)
    assert hint_word in (caught.value.hint or "")
    with pytest.raises(TrainError):
        default_space(name, task)


def test_class_weight_on_regression_is_an_error() -> None:
    with pytest.raises(TrainError, match="classification") as caught:
        _make("ridge", "regression", class_weight=True)
    assert caught.value.hint


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # what an absent package looks like
    with pytest.raises(MissingDependencyError) as caught:
        _make("lightgbm", "binary")
    assert caught.value.fields["package"] == "lightgbm"
    assert "loopline[train]" in (caught.value.hint or "")


@pytest.mark.parametrize(("name", "task"), COMBOS)
def test_default_space_parses_names_real_params_and_fits(name: CandidateName, task: Task) -> None:
    space = default_space(name, task)
    dims = parse_space(space)
    model = _make(name, task)
    assert set(dims) <= set(model.get_params())
    if name == "linear":
        assert dims == {}
        return
    assert dims, "every model but plain linear regression has something to tune"
    X, y = _data(task)
    for point in sample_points(dims, n=1, seed=0):
        fitted = _make(name, task, params=point).fit(X, y)
        assert fitted.predict(X).shape == (len(y),)


def test_default_space_is_a_fresh_copy() -> None:
    space = default_space("lightgbm", "binary")
    space["num_leaves"]["int"][0] = 1000
    assert default_space("lightgbm", "binary")["num_leaves"]["int"][0] == 4


def test_the_default_lightgbm_space_fits_the_default_budget() -> None:
    """Measured by benchmarks/train_tabular.py: with 30 trials and 3 inner folds, small
    trees (4-64 leaves) and at most 1,000 of them halve the search time of 8-128 leaves and
    up to 1,500 trees (Telco churn 129 s -> 58-70 s nested, ROC-AUC 0.8480 -> 0.8486;
    Ames 171 s -> 116-120 s, RMSE(log) 0.1209 -> 0.1220)."""
    space = default_space("lightgbm", "regression")
    assert space["num_leaves"] == {"int": [4, 64], "log": True}
    assert space["n_estimators"] == {"int": [50, 1000], "log": True}
    assert default_space("xgboost", "binary")["n_estimators"] == {"int": [100, 1500], "log": True}
