"""ab_report on SQLite and PostgreSQL: numbers from seeded synthetic logs equal hand counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from loopline.config.serving import ExperimentConfig
from loopline.evaluate.ab_test import (
    minimum_detectable_effect,
    prob_to_beat,
    sample_size,
    z_test,
)
from loopline.serve.ab_report import ab_report, is_positive
from loopline.serve.experiments import set_experiment_state
from loopline.serve.log_tables import (
    ab_exposures,
    ensure_tables,
    serve_events,
    serve_feedback,
    serve_requests,
)
from loopline.store.metadata import MetadataStore

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CHURN_AB = ExperimentConfig.model_validate(
    {
        "model": "churn",
        "variants": [
            {"name": "control", "alias": "champion"},
            {"name": "v2", "version": "2"},
            {"name": "v3", "version": "3", "weight": 0.01},
        ],
    }
)
RECS = ExperimentConfig.model_validate(
    {
        "outcome": "purchase",
        "variants": [
            {"name": "popular", "strategy": "popular"},
            {"name": "blend", "strategy": "blend"},
        ],
    }
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = "sqlite:///meta.db"
    else:
        url = request.getfixturevalue("postgres_url")
    s = MetadataStore(url, base_dir=tmp_path)
    ensure_tables(s)
    yield s
    s.close()


def insert(store: MetadataStore, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        with store.engine.begin() as conn:
            conn.execute(table.insert(), rows)


def model_experiment_logs(seed: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Seeded logs of ``churn_ab`` plus noise, and the expected counts worked out directly."""
    rng = np.random.default_rng(seed)
    exposures: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    units = {"control": set(), "v2": set()}  # type: dict[str, set[str]]
    converted = {"control": set(), "v2": set()}  # type: dict[str, set[str]]
    p_positive = {"control": 0.10, "v2": 0.16}
    for u in range(800):
        unit = f"user-{u}"
        variant = "control" if rng.random() < 0.5 else "v2"
        first = T0 + timedelta(seconds=int(rng.integers(0, 3600)))
        units[variant].add(unit)
        for k in range(int(rng.integers(1, 4))):  # several server processes: several rows
            exposures.append(
                {
                    "time": first + timedelta(seconds=60 * k),
                    "experiment": "churn_ab",
                    "variant": variant,
                    "unit_id": unit,
                    "request_id": f"{unit}-r{k}",
                }
            )
        if u % 97 == 0:  # weights changed later: the second variant must not count
            other = "v2" if variant == "control" else "control"
            exposures.append(
                {
                    "time": first + timedelta(days=1),
                    "experiment": "churn_ab",
                    "variant": other,
                    "unit_id": unit,
                    "request_id": None,
                }
            )
        for k in range(int(rng.integers(1, 4))):
            request_id = f"{unit}-r{k}"
            keep_unit = u % 11 != 0  # some request rows lack the unit: feedback names it
            row = {
                "request_id": request_id,
                "time": first,
                "model": "churn",
                "version": "1",
                "experiment": "churn_ab",
                "variant": variant,
                "unit_id": unit if keep_unit else None,
                "shadow": False,
            }
            requests.append(row)
            requests.append(row | {"version": "9", "variant": None, "shadow": True})
            roll = rng.random()
            if roll < 0.6:  # labelled
                positive = rng.random() < p_positive[variant]
                label = (
                    rng.choice(["Yes", "yes", True, 1])
                    if positive
                    else rng.choice(["No", False, 0])
                )
                label = label.item() if hasattr(label, "item") else label
                feedback.append(
                    {
                        "request_id": request_id,
                        "time": first,
                        "label": label,
                        "unit_id": None if keep_unit else unit,
                    }
                )
                if positive:
                    converted[variant].add(unit)
    # noise: another experiment's requests and feedback, feedback for unknown requests
    requests.append(
        {
            "request_id": "other-1",
            "time": T0,
            "model": "churn",
            "version": "1",
            "experiment": "other",
            "variant": "control",
            "unit_id": "user-1",
            "shadow": False,
        }
    )
    feedback.append({"request_id": "other-1", "time": T0, "label": "Yes", "unit_id": None})
    feedback.append({"request_id": "never-logged", "time": T0, "label": "Yes", "unit_id": "x"})
    expected = {v: (len(units[v]), len(converted[v])) for v in units}
    return {"exposures": exposures, "requests": requests, "feedback": feedback}, expected


def test_label_outcomes_per_variant_equal_the_hand_counts(store: MetadataStore) -> None:
    logs, expected = model_experiment_logs(seed=11)
    insert(store, ab_exposures, logs["exposures"])
    insert(store, serve_requests, logs["requests"])
    insert(store, serve_feedback, logs["feedback"])
    report = ab_report(store, "churn_ab", CHURN_AB)
    control, v2, v3 = report.variants
    (n_a, c_a), (n_b, c_b) = expected["control"], expected["v2"]
    assert (control.units, control.conversions) == (n_a, c_a)
    assert (v2.units, v2.conversions) == (n_b, c_b)
    assert n_a + n_b == 800
    assert min(c_a, c_b) > 0
    assert (control.rate, v2.rate) == (c_a / n_a, c_b / n_b)
    # the statistics are those of evaluate.ab_test on these counts
    test = z_test(c_a, n_a, c_b, n_b)
    assert (v2.lift, v2.p_value, v2.ci_low, v2.ci_high) == (
        test.lift,
        test.p_value,
        test.ci_low,
        test.ci_high,
    )
    assert v2.prob_beat_control == prob_to_beat(c_a, n_a, c_b, n_b)
    have = min(n_a, n_b)
    needed = sample_size(c_a / n_a, abs(test.lift or 0))
    assert (v2.needed_units, v2.more_units) == (needed, max(0, needed - have))
    assert v2.mde == minimum_detectable_effect(c_a / n_a, have)
    assert (control.p_value, control.lift) == (None, None)
    # a variant nobody saw yet: counts 0, no statistics
    assert (v3.units, v3.conversions, v3.rate, v3.p_value) == (0, 0, None, None)
    assert report.guidance[1] == "v3: no data yet (both control and v3 need exposed units)"
    assert (report.state, report.target, report.outcome, report.warnings) == (
        "running",
        "churn",
        "label",
        [],
    )


def test_positive_labels_can_be_named(store: MetadataStore) -> None:
    insert(
        store,
        ab_exposures,
        [
            {"time": T0, "experiment": "e", "variant": v, "unit_id": f"{v}{i}"}
            for v in ("control", "v2")
            for i in range(10)
        ],
    )
    insert(
        store,
        serve_requests,
        [
            {
                "request_id": f"r-{v}{i}",
                "time": T0,
                "model": "churn",
                "version": "1",
                "experiment": "e",
                "variant": v,
                "unit_id": f"{v}{i}",
                "shadow": False,
            }
            for v in ("control", "v2")
            for i in range(10)
        ],
    )
    labels = {"r-control0": "churned", "r-control1": "Yes", "r-v20": "CHURNED", "r-v21": "stayed"}
    insert(
        store,
        serve_feedback,
        [
            {"request_id": r, "time": T0, "label": label, "unit_id": None}
            for r, label in labels.items()
        ],
    )
    exp = ExperimentConfig.model_validate(
        {
            "model": "churn",
            "variants": [{"name": "control", "alias": "a"}, {"name": "v2", "alias": "b"}],
        }
    )
    by_default = ab_report(store, "e", exp)
    assert [v.conversions for v in by_default.variants] == [1, 0]
    named = ab_report(store, "e", exp, positive=["Churned"])
    assert [v.conversions for v in named.variants] == [1, 1]


def test_event_outcomes_count_users_who_converted_after_exposure(store: MetadataStore) -> None:
    rng = np.random.default_rng(5)
    exposures, events = [], []
    expected = {"popular": [0, 0], "blend": [0, 0]}
    for u in range(500):
        user, variant = f"u{u}", ("popular", "blend")[u % 2]
        seen = T0 + timedelta(minutes=int(rng.integers(0, 600)))
        exposures.append({"time": seen, "experiment": "recs", "variant": variant, "unit_id": user})
        expected[variant][0] += 1
        after = rng.random() < (0.2 if variant == "popular" else 0.3)
        if after:
            expected[variant][1] += 1
            for k in range(int(rng.integers(1, 3))):  # bought twice: still one conversion
                events.append(
                    {
                        "time": seen + timedelta(minutes=5 + k),
                        "user": user,
                        "item": "i1",
                        "event_type": "purchase",
                    }
                )
        if rng.random() < 0.3:  # before the exposure: not caused by the variant
            events.append(
                {
                    "time": seen - timedelta(minutes=1),
                    "user": user,
                    "item": "i2",
                    "event_type": "purchase",
                }
            )
        events.append(
            {"time": seen + timedelta(minutes=1), "user": user, "item": "i3", "event_type": "click"}
        )
    events.append({"time": T0, "user": "stranger", "item": "i1", "event_type": "purchase"})
    insert(store, ab_exposures, exposures)
    insert(store, serve_events, events)
    report = ab_report(store, "recs", RECS)
    assert [(v.variant, v.units, v.conversions) for v in report.variants] == [
        ("popular", *expected["popular"]),
        ("blend", *expected["blend"]),
    ]
    (n_a, c_a), (n_b, c_b) = expected["popular"], expected["blend"]
    assert report.variants[1].p_value == z_test(c_a, n_a, c_b, n_b).p_value
    assert report.target == "recommender"


def test_a_small_report_by_hand(store: MetadataStore) -> None:
    # a: 2 of 20 convert, b: 5 of 20. Pooled 7/40 = 0.175; se = sqrt(.175 * .825 * (2 / 20))
    # = 0.120156; z = 0.15 / 0.120156 = 1.24838; p = 2 (1 - Phi(1.24838)) = 0.21189
    insert(
        store,
        ab_exposures,
        [
            {
                "time": T0,
                "experiment": "recs",
                "variant": ("popular", "blend")[i % 2],
                "unit_id": f"u{i}",
            }
            for i in range(40)
        ],
    )
    insert(
        store,
        serve_events,
        [
            {"time": T0, "user": f"u{i}", "item": "x", "event_type": "purchase"}
            for i in (0, 2, 1, 3, 5, 7, 9)
        ],
    )
    report = ab_report(store, "recs", RECS, target_lift=0.5)
    a, b = report.variants
    assert (a.units, a.conversions, a.rate, b.units, b.conversions, b.rate) == (
        20,
        2,
        0.1,
        20,
        5,
        0.25,
    )
    assert b.lift == pytest.approx(1.5)
    assert b.p_value == pytest.approx(0.21189, abs=1e-5)
    assert b.prob_beat_control == pytest.approx(0.8811, abs=1e-3)  # 4e6 seeded draws: 0.88114
    # sized for the asked +50% lift over 10%: 686 units per variant, 666 more than now
    assert (b.needed_units, b.more_units) == (686, 666)
    assert report.guidance[0].startswith(
        "blend: p = 0.212 vs popular: needs ~666 more units per variant to detect a 50.0% lift"
    )
    assert report.to_json()["variants"][1]["conversions"] == 5


def test_state_and_unknown_variants(store: MetadataStore) -> None:
    insert(
        store,
        ab_exposures,
        [{"time": T0, "experiment": "recs", "variant": "retired", "unit_id": "u1"}],
    )
    assert ab_report(store, "recs", RECS).state == "running"
    set_experiment_state(store, "recs", enabled=False)
    report = ab_report(store, "recs", RECS)
    assert report.state == "stopped"
    assert report.warnings == ["units exposed to variant 'retired', which is not in the config"]
    assert [v.units for v in report.variants] == [0, 0]
    disabled = RECS.model_copy(update={"enabled": False})
    assert ab_report(store, "recs", disabled).state == "disabled"


def test_is_positive() -> None:
    positives = {"yes", "true", "1", "positive"}
    assert all(is_positive(x, positives) for x in ("Yes", " TRUE ", "1", 1, 1.0, True))
    assert not any(is_positive(x, positives) for x in ("No", 0, 2, False, None, ["Yes"], {}))
