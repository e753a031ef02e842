"""Versions, aliases, gated promotion and rollback against a real MLflow SQLite store."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import loopline.registry as registry_module
from loopline.config import TrackingConfig
from loopline.errors import ConfigError, PromotionRejected, RegistryError
from loopline.registry import Gate, ModelRegistry, VersionInfo
from loopline.store.tracking import Tracker

pytest.importorskip("mlflow")
sk_dummy = pytest.importorskip("sklearn.dummy")
sk_linear = pytest.importorskip("sklearn.linear_model")
sk_metrics = pytest.importorskip("sklearn.metrics")
sk_tree = pytest.importorskip("sklearn.tree")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(300, 4))
    target = (features @ [1.0, -0.8, 0.5, 0.0] + rng.normal(scale=0.7, size=300) > 0).astype(int)
    return features[:200], target[:200], features[200:], target[200:]


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    return Tracker(
        TrackingConfig(), base_dir=tmp_path_factory.mktemp("project"), experiment="churn"
    )


@pytest.fixture(scope="module")
def logged(tracker: Tracker, data: Data) -> dict[str, tuple[str, str, Any]]:
    """Three models logged once: a stump (fair), a constant (worse), logistic (better)."""
    x_train, y_train, x_test, _ = data
    models = {
        "stump": sk_tree.DecisionTreeClassifier(max_depth=1, random_state=0),
        "constant": sk_dummy.DummyClassifier(strategy="prior"),
        "logistic": sk_linear.LogisticRegression(),
    }
    out = {}
    for key, model in models.items():
        model.fit(x_train, y_train)
        with tracker.start_run(key) as run:
            uri = run.log_model(
                model, signature_from=(x_test[:10], model.predict_proba(x_test[:10])[:, 1])
            )
        out[key] = (uri, run.run_id, model)
    return out


@pytest.fixture
def registry(tracker: Tracker) -> ModelRegistry:
    return ModelRegistry(tracker)


@pytest.fixture
def name() -> str:
    """A fresh model name per test: the store is shared by the module."""
    return f"churn-{uuid.uuid4().hex[:8]}"


def holdout_auc(registry: ModelRegistry, data: Data) -> Any:
    """Score any version on the same held-out rows, as a user's evaluate callable would."""
    _, _, x_test, y_test = data

    def evaluate(info: VersionInfo) -> Mapping[str, float]:
        model = registry.load(info.name, version=info.version)
        scores = model.predict_proba(x_test)[:, 1]
        return {"roc_auc": float(sk_metrics.roc_auc_score(y_test, scores))}

    return evaluate


def register(registry: ModelRegistry, name: str, logged: Any, key: str) -> VersionInfo:
    uri, run_id, _ = logged[key]
    return registry.register(name, uri, run_id=run_id, description=key, actor="ci")


def test_a_new_version_becomes_the_challenger(
    registry: ModelRegistry, name: str, logged: Any
) -> None:
    first = register(registry, name, logged, "stump")
    second = register(registry, name, logged, "logistic")
    assert (first.version, second.version) == ("1", "2")
    assert second.run_id == logged["logistic"][1]
    assert second.description == "logistic"
    challenger = registry.challenger(name)
    assert challenger is not None
    assert challenger.version == "2"
    assert registry.champion(name) is None
    summary = next(m for m in registry.list_models() if m.name == name)
    assert summary.versions == ("1", "2")
    assert summary.aliases == {"challenger": "2"}


def test_gated_promotion_rejects_a_worse_model_and_accepts_a_better_one(
    registry: ModelRegistry, name: str, logged: Any, data: Data
) -> None:
    gate = Gate("roc_auc", max_regression=0.005)
    evaluate = holdout_auc(registry, data)
    _, _, x_test, y_test = data

    register(registry, name, logged, "stump")
    first = registry.promote(name, gate=gate, evaluate=evaluate, actor="ana", reason="first")
    stump_auc = sk_metrics.roc_auc_score(y_test, logged["stump"][2].predict_proba(x_test)[:, 1])
    assert (first.from_version, first.to_version, first.champion_score) == (None, "1", None)
    assert first.challenger_score == pytest.approx(stump_auc)
    assert registry.challenger(name) is None  # the challenger slot empties on promotion

    register(registry, name, logged, "constant")
    with pytest.raises(PromotionRejected) as caught:
        registry.promote(name, gate=gate, evaluate=evaluate, actor="ana", reason="constant")
    assert caught.value.fields["challenger_score"] == pytest.approx(0.5)
    assert caught.value.fields["champion_score"] == pytest.approx(stump_auc)
    champion = registry.champion(name)
    assert champion is not None
    assert champion.version == "1"
    assert registry.version(name, 2).tags["loopline.gate"].startswith("rejected: roc_auc 0.5 ")

    register(registry, name, logged, "logistic")
    moved = registry.promote(name, gate=gate, evaluate=evaluate, actor="bo", reason="better")
    assert (moved.from_version, moved.to_version) == ("1", "3")
    assert moved.challenger_score > stump_auc + 0.005
    champion = registry.champion(name)
    assert champion is not None
    assert champion.version == "3"
    assert champion.tags["loopline.gate"].startswith("passed: ")


def test_rollback_returns_to_the_previous_champion_and_stops_at_the_first(
    registry: ModelRegistry, name: str, logged: Any, data: Data
) -> None:
    gate = Gate("roc_auc")
    scores = {"1": {"roc_auc": 0.70}, "2": {"roc_auc": 0.80}, "3": {"roc_auc": 0.85}}
    for key in ("stump", "logistic", "logistic"):
        register(registry, name, logged, key)
        registry.promote(name, gate=gate, metrics=scores, actor="ana", reason="retrain")

    event = registry.rollback(name, actor="bo", reason="precision complaints")
    assert (event.from_version, event.to_version) == ("3", "2")
    assert registry.rollback(name, actor="bo", reason="again").to_version == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(name, actor="bo", reason="once more")
    champion = registry.champion(name)
    assert champion is not None
    assert champion.version == "1"

    _, _, x_test, _ = data
    loaded = registry.load(name)  # champion: the stump again
    stump = logged["stump"][2]
    np.testing.assert_array_equal(loaded.predict_proba(x_test), stump.predict_proba(x_test))


def test_history_records_who_did_what_why_and_with_which_scores(
    registry: ModelRegistry, name: str, logged: Any
) -> None:
    gate = Gate("rmse", greater_is_better=False, max_regression=0.001)
    scores = {"1": {"rmse": 0.130}, "2": {"rmse": 0.140}}
    register(registry, name, logged, "stump")
    registry.promote(name, gate=gate, metrics=scores, actor="ana", reason="baseline")
    register(registry, name, logged, "logistic")
    with pytest.raises(PromotionRejected):
        registry.promote(name, gate=gate, metrics=scores, actor="bo", reason="new features")

    history = registry.history(name)
    assert [(e.action, e.actor, e.from_version, e.to_version) for e in history] == [
        ("register", "ci", None, "1"),
        ("promote", "ana", None, "1"),
        ("register", "ci", None, "2"),
        ("reject", "bo", "1", "2"),
    ]
    assert history[1].reason == "baseline"
    assert history[3].metrics == {"challenger.rmse": 0.140, "champion.rmse": 0.130}
    assert history[0].time <= history[-1].time


def test_history_keeps_only_the_most_recent_events(
    registry: ModelRegistry, name: str, logged: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "MAX_EVENTS", 3)
    for key in ("stump", "constant", "logistic", "stump"):
        register(registry, name, logged, key)
    assert [e.to_version for e in registry.history(name)] == ["2", "3", "4"]


def test_a_gate_metric_missing_from_the_scores_is_a_registry_error(
    registry: ModelRegistry, name: str, logged: Any
) -> None:
    register(registry, name, logged, "stump")
    with pytest.raises(RegistryError, match="no 'roc_auc' score for version 1"):
        registry.promote(name, gate=Gate("roc_auc"), metrics={"1": {"accuracy": 0.9}})
    assert registry.champion(name) is None


def test_unknown_models_and_missing_aliases_are_registry_errors(
    registry: ModelRegistry, name: str, logged: Any
) -> None:
    for call in (
        lambda: registry.champion(name),
        lambda: registry.history(name),
        lambda: registry.rollback(name),
        lambda: registry.promote(name, gate=Gate("roc_auc"), metrics={}),
    ):
        with pytest.raises(RegistryError, match=f"no registered model named '{name}'") as caught:
            call()
        assert caught.value.fields["model"] == name
        assert "loopline models list" in (caught.value.hint or "")
    register(registry, name, logged, "stump")
    with pytest.raises(RegistryError, match="has no 'champion' version"):
        registry.load(name)
    with pytest.raises(RegistryError, match="no champion to roll back"):
        registry.rollback(name)


def test_a_gate_with_a_negative_tolerance_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'max_regression' parameter of Gate"):
        Gate("roc_auc", max_regression=-0.01)
