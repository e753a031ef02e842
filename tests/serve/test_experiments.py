"""ExperimentRouter: sticky hash assignment, split ratios, weights, kill switch, shadow."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopline.config.serving import ExperimentConfig
from loopline.errors import ConfigError
from loopline.serve.experiments import (
    Assignment,
    ExperimentRouter,
    experiment_state,
    set_experiment_state,
    stopped_experiments,
    unit_point,
)
from loopline.store.metadata import MetadataStore

UNITS = [f"user-{i}" for i in range(20_000)]


def experiment(**spec: Any) -> ExperimentConfig:
    spec.setdefault("model", "churn")
    spec.setdefault(
        "variants", [{"name": "control", "alias": "champion"}, {"name": "v2", "version": "2"}]
    )
    return ExperimentConfig.model_validate(spec)


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """``count`` successes of ``n`` lie within ``sigmas`` standard deviations of ``n p``."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    s = MetadataStore("sqlite:///meta.db", base_dir=tmp_path)
    yield s
    s.close()


def test_the_same_unit_gets_the_same_variant_from_every_router(store: MetadataStore) -> None:
    experiments = {"churn_ab": experiment()}
    first, second = ExperimentRouter(experiments, store), ExperimentRouter(experiments, None)
    for unit in UNITS[:2000]:
        a = first.for_model("churn", unit)
        assert a is not None
        assert a == second.for_model("churn", unit) == first.for_model("churn", unit)


def test_assignments_are_the_same_in_another_process_with_another_hash_seed(
    store: MetadataStore,
) -> None:
    router = ExperimentRouter({"churn_ab": experiment()}, store)
    here = [router.for_model("churn", u).variant for u in UNITS[:500]]  # type: ignore[union-attr]
    script = (
        "from loopline.config.serving import ExperimentConfig\n"
        "from loopline.serve.experiments import ExperimentRouter\n"
        "exp = ExperimentConfig.model_validate({'model': 'churn', 'variants': ["
        "{'name': 'control', 'alias': 'champion'}, {'name': 'v2', 'version': '2'}]})\n"
        "r = ExperimentRouter({'churn_ab': exp}, None)\n"
        "print(','.join(r.for_model('churn', f'user-{i}').variant for i in range(500)))\n"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().split(",") == here


def test_a_known_unit_always_lands_at_the_same_point() -> None:
    # pinned: a change of the hash would reshuffle every running experiment
    assert unit_point("churn_ab", "user-42") == pytest.approx(0.281397829132507, abs=1e-15)
    assert 0 <= unit_point("", "") < 1


@pytest.mark.parametrize(
    "weights",
    [[1, 1], [1, 3], [2, 1, 1], [0.1, 0.9], [5, 3, 1, 1]],
    ids=["50-50", "25-75", "50-25-25", "10-90", "50-30-10-10"],
)
def test_split_ratios_follow_the_weights_within_binomial_tolerance(weights: list[float]) -> None:
    variants = [{"name": f"v{i}", "version": str(i)} for i in range(len(weights))]
    router = ExperimentRouter(
        {
            "e": experiment(
                variants=[v | {"weight": w} for v, w in zip(variants, weights, strict=True)]
            )
        },
        None,
    )
    counts = Counter(router.for_model("churn", u).variant for u in UNITS)  # type: ignore[union-attr]
    total = sum(weights)
    for i, w in enumerate(weights):
        assert within_binomial(counts[f"v{i}"], len(UNITS), w / total), (counts, weights)


def test_each_variant_carries_its_target() -> None:
    router = ExperimentRouter({"e": experiment()}, None)
    seen = {router.for_model("churn", u) for u in UNITS[:200]}
    assert seen == {
        Assignment("e", "control", None, "champion", None),
        Assignment("e", "v2", "2", None, None),
    }


def test_a_new_salt_reshuffles_units_independently() -> None:
    a = ExperimentRouter({"e": experiment()}, None)
    b = ExperimentRouter({"e": experiment(salt="round-2")}, None)
    pairs = Counter(
        (a.for_model("churn", u).variant, b.for_model("churn", u).variant)  # type: ignore[union-attr]
        for u in UNITS
    )
    # independent 50/50 splits: each of the four cells holds about a quarter of the units
    for cell in [("control", "control"), ("control", "v2"), ("v2", "control"), ("v2", "v2")]:
        assert within_binomial(pairs[cell], len(UNITS), 0.25), pairs


def test_the_recommender_experiment_assigns_strategies() -> None:
    recs = ExperimentConfig.model_validate(
        {
            "outcome": "click",
            "variants": [
                {"name": "popular", "strategy": "popular"},
                {"name": "blend", "strategy": "blend", "weight": 3},
            ],
        }
    )
    router = ExperimentRouter({"recs": recs, "churn_ab": experiment()}, None)
    counts = Counter(router.for_recommender(u).strategy for u in UNITS)  # type: ignore[union-attr]
    assert within_binomial(counts["blend"], len(UNITS), 0.75)
    assert router.for_model("other", "u1") is None
    assert router.running() == ["churn_ab", "recs"]


def test_no_experiment_no_assignment() -> None:
    router = ExperimentRouter({}, None)
    assert router.for_model("churn", "u1") is None
    assert router.for_recommender("u1") is None
    assert router.shadow("churn") is None


def test_shadow_is_the_running_experiments_challenger() -> None:
    router = ExperimentRouter(
        {
            "shadow_only": experiment(
                variants=[{"name": "live", "alias": "champion"}], shadow="challenger"
            )
        },
        None,
    )
    assert router.shadow("churn") == "challenger"
    assert router.for_model("churn", "u1").variant == "live"  # type: ignore[union-attr]
    assert router.shadow("other") is None


def test_kill_switch_in_config_assigns_nobody_and_stops_the_shadow() -> None:
    router = ExperimentRouter({"e": experiment(enabled=False, shadow="challenger")}, None)
    assert all(router.for_model("churn", u) is None for u in UNITS[:100])
    assert router.shadow("churn") is None
    assert router.running() == []


def test_two_running_experiments_on_one_model_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'a' and 'b' both run on model 'churn'"):
        ExperimentRouter({"a": experiment(), "b": experiment()}, None)
    # a disabled one may stay in the config beside the running one
    router = ExperimentRouter({"a": experiment(enabled=False), "b": experiment()}, None)
    assert router.for_model("churn", "u1").experiment == "b"  # type: ignore[union-attr]


def test_two_running_recommender_experiments_are_a_config_error() -> None:
    recs = ExperimentConfig.model_validate({"variants": [{"name": "p", "strategy": "popular"}]})
    with pytest.raises(ConfigError, match="the recommender"):
        ExperimentRouter({"a": recs, "b": recs}, None)


def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_kill_switch_in_the_database_reaches_a_running_router(
    store: MetadataStore, tmp_path: Path
) -> None:
    router = ExperimentRouter({"e": experiment(shadow="challenger")}, store, refresh_interval=0.05)
    before = {u: router.for_model("churn", u) for u in UNITS[:50]}
    assert all(before.values())
    # stopped from another connection, as `loopline ab stop` in another process does
    other = MetadataStore("sqlite:///meta.db", base_dir=tmp_path)
    set_experiment_state(other, "e", enabled=False, actor="alice")
    wait_for(lambda: router.for_model("churn", "user-1") is None)
    assert all(router.for_model("churn", u) is None for u in UNITS[:50])
    assert router.shadow("churn") is None
    assert stopped_experiments(store) == {"e"}
    state = experiment_state(store, "e")
    assert state is not None
    assert (state["enabled"], state["actor"]) == (False, "alice")
    # started again: every unit is back in its old variant
    set_experiment_state(other, "e", enabled=True)
    wait_for(lambda: router.for_model("churn", "user-1") is not None)
    assert {u: router.for_model("churn", u) for u in UNITS[:50]} == before
    other.close()


def test_a_new_router_starts_with_the_stored_state(store: MetadataStore) -> None:
    set_experiment_state(store, "e", enabled=False)
    router = ExperimentRouter({"e": experiment()}, store, refresh_interval=3600)
    assert router.for_model("churn", "u1") is None
    assert experiment_state(store, "unknown") is None


@pytest.mark.services
def test_kill_switch_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    pg = MetadataStore(postgres_url, base_dir=tmp_path)
    other = MetadataStore(postgres_url, base_dir=tmp_path)
    try:
        router = ExperimentRouter({"e": experiment()}, pg, refresh_interval=0.05)
        assert router.for_model("churn", "u1") is not None
        set_experiment_state(other, "e", enabled=False)
        set_experiment_state(other, "e", enabled=False)  # stopping twice is fine
        wait_for(lambda: router.for_model("churn", "u1") is None)
        set_experiment_state(other, "e", enabled=True)
        router.refresh()
        assert router.for_model("churn", "u1") is not None
    finally:
        pg.close()
        other.close()
