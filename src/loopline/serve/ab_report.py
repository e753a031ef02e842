"""The A/B report of one experiment: per-variant outcomes read from the serving log, tested.

Units are counted from ``ab_exposures``: each unit once, in the variant of its first
exposure. A unit *converts*:

- ``outcome: label`` (model experiments): when some feedback for one of its requests in the
  experiment (``serve_requests`` rows of the experiment, shadow rows excluded) carries a
  positive label: ``True``, ``1`` or one of ``positive`` (strings compared case-insensitively;
  default ``yes``, ``true``, ``1``, ``positive``);
- any other ``outcome`` (an event type such as ``click`` or ``purchase``): when the unit
  (the user) has an event of that type in ``serve_events`` at or after its first exposure.

The rate is conversions / units. Each variant after the first (the control) is compared to
the control with :func:`~loopline.evaluate.ab_test.z_test` and
:func:`~loopline.evaluate.ab_test.prob_to_beat`, and gets sample-size guidance: the units per
variant needed to detect the lift observed so far (or ``target_lift``), how many more that
is, and the smallest lift the current units can detect.

>>> import tempfile
>>> from datetime import UTC, datetime
>>> from pathlib import Path
>>> from loopline.config.serving import ExperimentConfig
>>> from loopline.serve.log_tables import ab_exposures, ensure_tables, serve_events
>>> from loopline.store.metadata import MetadataStore
>>> store = MetadataStore("sqlite:///m.db", base_dir=Path(tempfile.mkdtemp()))
>>> ensure_tables(store)
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> with store.engine.begin() as conn:
...     _ = conn.execute(ab_exposures.insert(), [
...         {"time": t, "experiment": "recs", "variant": "ab"[i % 2], "unit_id": f"u{i}"}
...         for i in range(40)])
...     _ = conn.execute(serve_events.insert(), [
...         {"time": t, "user": f"u{i}", "item": "x", "event_type": "click"}
...         for i in (0, 2, 1, 3, 5, 7, 9)])
>>> exp = ExperimentConfig.model_validate({"outcome": "click", "variants": [
...     {"name": "a", "strategy": "popular"}, {"name": "b", "strategy": "blend"}]})
>>> report = ab_report(store, "recs", exp)
>>> [(v.variant, v.units, v.conversions, v.rate) for v in report.variants]
[('a', 20, 2, 0.1), ('b', 20, 5, 0.25)]
>>> round(report.variants[1].p_value, 4), round(report.variants[1].prob_beat_control, 3)
(0.2119, 0.881)
>>> store.close()
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from loopline.config.serving import ExperimentConfig
from loopline.errors import StoreError
from loopline.evaluate.ab_test import (
    minimum_detectable_effect,
    prob_to_beat,
    sample_size,
    z_test,
)
from loopline.serve.experiments import experiment_state
from loopline.serve.log_tables import (
    ab_exposures,
    ensure_tables,
    serve_events,
    serve_feedback,
    serve_requests,
)
from loopline.store.metadata import MetadataStore

POSITIVE_LABELS = ("yes", "true", "1", "positive")
"""Labels that count as a conversion by default (besides ``True`` and ``1``)."""


@dataclass(frozen=True)
class VariantOutcome:
    """One variant's numbers; the statistics compare it with the control (``None`` for the
    control itself, or where there is not enough data)."""

    variant: str
    units: int
    conversions: int
    rate: float | None
    lift: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    prob_beat_control: float | None = None
    needed_units: int | None = None
    more_units: int | None = None
    mde: float | None = None


@dataclass(frozen=True)
class AbReport:
    """The report of one experiment (see the module docstring)."""

    experiment: str
    target: str
    outcome: str
    state: str
    alpha: float
    power: float
    variants: list[VariantOutcome]
    guidance: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return asdict(self)


def ab_report(
    metadata: MetadataStore,
    name: str,
    config: ExperimentConfig,
    *,
    positive: Iterable[Any] = POSITIVE_LABELS,
    alpha: float = 0.05,
    power: float = 0.8,
    target_lift: float | None = None,
) -> AbReport:
    """The report of experiment ``name`` (configured as ``config``) from the serving log."""
    ensure_tables(metadata)
    try:
        with metadata.engine.connect() as conn:
            exposed = _first_exposures(conn, name)
            if config.outcome == "label":
                positives = _positives(positive)
                conversions = _label_conversions(conn, name, exposed, positives)
            else:
                conversions = _event_conversions(conn, name, exposed, config.outcome)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            f"cannot read the serving log of experiment {name!r}",
            url=metadata.display_url,
            hint="check the metadata database (stores.metadata_url) is reachable",
        ) from exc
    state = _state(metadata, name, config)
    names = [v.name for v in config.variants]
    units = _units(exposed)
    variants, guidance = _compare(names, units, conversions, alpha, power, target_lift)
    warnings = [
        f"units exposed to variant {v!r}, which is not in the config"
        for v in sorted(set(units) - set(names))
    ]
    return AbReport(
        experiment=name,
        target=config.model or "recommender",
        outcome=config.outcome,
        state=state,
        alpha=alpha,
        power=power,
        variants=variants,
        guidance=guidance,
        warnings=warnings,
    )


def _state(metadata: MetadataStore, name: str, config: ExperimentConfig) -> str:
    if not config.enabled:
        return "disabled"
    row = experiment_state(metadata, name)
    return "stopped" if row is not None and not row["enabled"] else "running"


_Exposed = dict[str, tuple[Any, str]]
"""unit -> (time, variant) of its first exposure."""


def _first_exposures(conn: sa.Connection, name: str) -> _Exposed:
    """Each exposed unit's first exposure: one row per (unit, variant) read, the earliest kept.

    Done in Python rather than with a self-join or window in SQL: on tables the planner has
    no statistics for yet, PostgreSQL re-ran such a subquery for every feedback row.
    """
    e = ab_exposures
    query = (
        sa.select(e.c.unit_id, e.c.variant, sa.func.min(e.c.time))
        .where(e.c.experiment == name)
        .group_by(e.c.unit_id, e.c.variant)
    )
    first: _Exposed = {}
    for unit, variant, at in conn.execution_options(yield_per=10_000).execute(query):
        seen = first.get(unit)
        if seen is None or (at, variant) < seen:
            first[unit] = (at, variant)
    return first


def _units(exposed: _Exposed) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, variant in exposed.values():
        counts[variant] = counts.get(variant, 0) + 1
    return counts


def _label_conversions(
    conn: sa.Connection, name: str, exposed: _Exposed, positives: set[Any]
) -> dict[str, int]:
    r, f = serve_requests, serve_feedback
    query = (
        sa.select(sa.func.coalesce(r.c.unit_id, f.c.unit_id), f.c.label)
        .select_from(f)
        .join(r, r.c.request_id == f.c.request_id)
        .where(r.c.experiment == name, r.c.shadow.is_(False))
    )
    converted = {
        unit
        for unit, label in conn.execution_options(yield_per=10_000).execute(query)
        if unit in exposed and is_positive(label, positives)
    }
    return _units({unit: exposed[unit] for unit in converted})


def _event_conversions(
    conn: sa.Connection, name: str, exposed: _Exposed, event_type: str
) -> dict[str, int]:
    ev, e = serve_events, ab_exposures
    users = sa.select(e.c.unit_id).where(e.c.experiment == name).distinct()
    query = (
        sa.select(ev.c.user, sa.func.max(ev.c.time))
        .where(ev.c.event_type == event_type, ev.c.user.in_(users))
        .group_by(ev.c.user)
    )
    converted = {
        user
        for user, last in conn.execution_options(yield_per=10_000).execute(query)
        if user in exposed and last >= exposed[user][0]
    }
    return _units({unit: exposed[unit] for unit in converted})


def _positives(positive: Iterable[Any]) -> set[Any]:
    return {p.lower() if isinstance(p, str) else p for p in positive}


def is_positive(label: Any, positives: set[Any]) -> bool:
    """Whether a feedback label counts as a conversion.

    >>> is_positive("Yes", {"yes"}), is_positive(True, set()), is_positive(0, {"yes"})
    (True, True, False)
    """
    if label is True or (isinstance(label, int | float) and not isinstance(label, bool)):
        return bool(label == 1) or label in positives
    if isinstance(label, str):
        return label.strip().lower() in positives
    return False


def _compare(
    names: list[str],
    units: dict[str, int],
    conversions: dict[str, int],
    alpha: float,
    power: float,
    target_lift: float | None,
) -> tuple[list[VariantOutcome], list[str]]:
    control = names[0]
    n_a, c_a = units.get(control, 0), conversions.get(control, 0)
    rows = [VariantOutcome(control, n_a, c_a, c_a / n_a if n_a else None)]
    guidance: list[str] = []
    for name in names[1:]:
        n_b, c_b = units.get(name, 0), conversions.get(name, 0)
        rate = c_b / n_b if n_b else None
        if not n_a or not n_b:
            rows.append(VariantOutcome(name, n_b, c_b, rate))
            guidance.append(f"{name}: no data yet (both {control} and {name} need exposed units)")
            continue
        test = z_test(c_a, n_a, c_b, n_b, alpha=alpha)
        stats: dict[str, Any] = {
            "lift": test.lift,
            "difference": test.difference,
            "ci_low": test.ci_low,
            "ci_high": test.ci_high,
            "p_value": test.p_value,
            "prob_beat_control": prob_to_beat(c_a, n_a, c_b, n_b),
        }
        have = min(n_a, n_b)
        line = f"{name}: p = {test.p_value:.3g} vs {control}"
        baseline = test.rate_a
        if 0 < baseline < 1:
            mde = minimum_detectable_effect(baseline, have, alpha=alpha, power=power)
            stats["mde"] = mde
            lift = target_lift if target_lift is not None else abs(test.lift or 0.0)
            if lift > 0 and baseline * (1 + lift) < 1:
                needed = sample_size(baseline, lift, alpha=alpha, power=power)
                stats["needed_units"] = needed
                stats["more_units"] = max(0, needed - have)
                if test.p_value < alpha:
                    line += f": significant at alpha {alpha:g}"
                elif needed > have:
                    line += (
                        f": needs ~{needed - have:,} more units per variant to detect a "
                        f"{lift:.1%} lift"
                    )
                else:
                    line += f": {have:,} units per variant suffice for a {lift:.1%} lift"
            line += f" (the current units detect a lift of {mde:.1%} or more)"
        elif test.p_value < alpha:
            line += f": significant at alpha {alpha:g}"
        rows.append(VariantOutcome(name, n_b, c_b, rate, **stats))
        guidance.append(line)
    return rows, guidance
