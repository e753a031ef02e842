"""The self-contained HTML report of one training run: open it offline, mail it around.

:func:`write_train_report` renders a :class:`~loopline.evaluate.report_data.TrainReportData`
into one HTML file: a header (job, data, best candidate, MLflow ids, feature roles, notes),
a summary of the best candidate (CV mean ± std beside the holdout score), the candidate
comparison with the corrected resampled t-test against the best, the best candidate's
per-fold table, the task's charts (:mod:`loopline.evaluate.report_figures`), feature
importances and the 2-D exploration view.

Charts are inline SVG (:mod:`loopline.evaluate.charts`); nothing is fetched from the
network. Every user-provided string is escaped: jinja2 autoescapes the page and the chart
functions escape their own labels. Metrics are listed primary first, PR-AUC before ROC-AUC
when the positive class is rare (< 20% of the training rows).

    write_train_report(data, Path("reports/churn.html"))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from loopline.errors import EvaluationError
from loopline.evaluate import report_figures as figs
from loopline.evaluate.comparison import ComparisonRow
from loopline.evaluate.metrics import RARE_POSITIVE_RATE, greater_is_better
from loopline.evaluate.report_data import CandidateOutcome, TrainReportData

SIGNIFICANCE = 0.05
"""p-values at or above it are reported as "not significant"."""

_TEMPLATE_FILE = Path(__file__).with_name("report.html.j2")


@dataclass
class Table:
    """A header and rows of plain strings (escaped when rendered)."""

    head: list[str]
    rows: list[list[str]]


def write_train_report(data: TrainReportData, path: Path) -> Path:
    """Write the report of ``data`` to ``path`` (folders created); returns ``path``.

    Raises :class:`EvaluationError` when ``data`` is inconsistent (an unknown best
    candidate, predictions that do not line up with their targets).
    """
    best = _check(data)
    metrics = metric_order(data, best.cv.metric_names + list(data.holdout_metrics))
    context: dict[str, Any] = {
        "d": data,
        "generated": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        "summary": _summary(data, best.cv.summary(), metrics),
        "candidates": _candidates(data, metrics),
        "search": _search(data.candidates),
        "folds": _folds(best.cv.table(), metrics),
        "comparison_chart": figs.comparison_figure(data),
        "task_figures": [],
        "task_tables": [],
        "importance_figures": figs.importance_figures(data),
        "importance_table": _importances(data),
        "projections": [
            figure
            for view in [data.projection, *data.more_projections]
            if view is not None and (figure := figs.projection_figure(data, view)) is not None
        ],
    }
    if data.task == "binary":
        context["task_figures"] = figs.binary_figures(data)
    elif data.task == "multiclass":
        figures, rows = figs.multiclass_figures(data)
        head = ["class", "precision", "recall", "F1", "ROC-AUC (one vs rest)", "holdout rows"]
        context["task_figures"], context["task_tables"] = figures, [Table(head, rows)]
    else:
        context["task_figures"] = figs.regression_figures(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_template().render(**context), encoding="utf-8")
    return path


def metric_order(data: TrainReportData, names: list[str]) -> list[str]:
    """``names`` without repeats, the primary metric first and PR-AUC next when the
    positive class of a binary task is rare."""
    ordered = [data.primary_metric]
    if data.task == "binary" and figs.positive_rate(data) < RARE_POSITIVE_RATE:
        ordered.append("pr_auc")
    ordered.extend(names)
    return [m for i, m in enumerate(ordered) if m in names and m not in ordered[:i]]


def _check(data: TrainReportData) -> CandidateOutcome:
    by_name = {c.name: c for c in data.candidates}
    if data.best not in by_name:
        raise EvaluationError(
            f"best candidate {data.best!r} is not among the candidates",
            best=data.best,
            candidates=sorted(by_name),
            hint="set TrainReportData.best to the name of one CandidateOutcome",
        )
    if data.task not in ("binary", "multiclass", "regression"):
        raise EvaluationError(
            f"unknown task {data.task!r}", hint="use 'binary', 'multiclass' or 'regression'"
        )
    pairs = (("oof", data.y_train, data.oof), ("holdout_pred", data.y_holdout, data.holdout_pred))
    for name, truth, pred in pairs:
        if len(truth) != len(pred):
            raise EvaluationError(
                f"{name} has {len(pred)} rows but its target has {len(truth)}",
                field=name,
                hint="oof lines up with y_train, holdout_pred with y_holdout",
            )
    return by_name[data.best]


def _summary(
    data: TrainReportData, cv: dict[str, tuple[float, float]], metrics: list[str]
) -> Table:
    rows = [
        [
            _metric_label(m),
            _mean_std(cv, m),
            _num(data.holdout_metrics[m]) if m in data.holdout_metrics else "",
        ]
        for m in metrics
    ]
    return Table(["metric", "cross-validation (mean ± std)", "holdout"], rows)


def _candidates(data: TrainReportData, metrics: list[str]) -> Table:
    """Every candidate, in comparison order (best first), with the t-test columns after
    the primary metric."""
    tests = {row.model: row for row in data.comparison}
    by_name = {c.name: c for c in data.candidates}
    order = [row.model for row in data.comparison if row.model in by_name]
    order += [name for name in by_name if name not in order]
    primary = data.primary_metric
    others = [m for m in metrics if m != primary]
    head = ["candidate", _metric_label(primary), "diff vs best", "t", "p", "verdict"]
    head += [_metric_label(m) for m in others]
    rows = []
    for name in order:
        summary = by_name[name].cv.summary()
        rows.append(
            [name, _mean_std(summary, primary)]
            + _test_cells(tests.get(name), name == data.best)
            + [_mean_std(summary, m) for m in others]
        )
    return Table(head, rows)


def _test_cells(row: ComparisonRow | None, is_best: bool) -> list[str]:
    if is_best or (row is not None and row.is_best):
        return ["", "", "", "best"]
    if row is None:
        return ["", "", "", "not compared"]
    verdict = "significant" if row.p_value < SIGNIFICANCE else "not significant"
    p = "< 0.001" if row.p_value < 0.001 else f"{row.p_value:.3f}"
    t = ("−∞" if row.t < 0 else "∞") if math.isinf(row.t) else f"{row.t:.2f}"
    return [f"{row.diff:+.4f}", t, p, verdict]


def _search(candidates: list[CandidateOutcome]) -> Table:
    rows = [
        [c.name, str(c.trials), f"{c.search_seconds:.1f}", _params(c.best_params)]
        for c in candidates
    ]
    return Table(["candidate", "trials", "search seconds", "chosen parameters"], rows)


def _folds(table: list[dict[str, Any]], metrics: list[str]) -> Table:
    head = ["fold", "n_train", "n_test"] + [_metric_label(m) for m in metrics]
    rows = [
        [str(row.get(k, "")) for k in ("fold", "n_train", "n_test")]
        + [_num(row[m]) if m in row else "" for m in metrics]
        for row in table
    ]
    return Table(head, rows)


def _importances(data: TrainReportData) -> Table | None:
    if not data.importances:
        return None
    rows = [[i.feature, _num(i.mean), _num(i.std)] for i in data.importances]
    return Table(["feature", "mean drop", "std"], rows)


def _mean_std(summary: dict[str, tuple[float, float]], metric: str) -> str:
    if metric not in summary:
        return ""
    mean, std = summary[metric]
    return f"{_num(mean)} ± {_num(std)}"


def _metric_label(metric: str) -> str:
    """The metric name, with ↓ when lower is better."""
    try:
        return metric if greater_is_better(metric) else f"{metric} ↓"
    except EvaluationError:
        return metric


def _params(params: dict[str, Any]) -> str:
    shown = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return ", ".join(shown) or "defaults"


def _num(value: float) -> str:
    """Four decimals, or thousands separators for large values."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4f}"


def _template() -> jinja2.Template:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_TEMPLATE_FILE.read_text(encoding="utf-8"))
