"""The charts of a training report, built from a :class:`TrainReportData`, one function per
section: binary curves, multiclass confusion, regression residuals, importances, projection.

Out-of-fold curves use the best candidate's predictions on the rows cross-validation
covered (NaN rows skipped); holdout curves use the holdout predictions. The confusion
matrix applies the shipped threshold (chosen on out-of-fold predictions) to the holdout.
AUCs in legends are scikit-learn's ``roc_auc_score`` / ``average_precision_score``.

>>> Figure(Markup("<svg></svg>"), "caption").caption
'caption'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from markupsafe import Markup
from numpy.typing import NDArray
from sklearn import metrics as skm

from loopline.evaluate import charts
from loopline.evaluate.charts import Series
from loopline.evaluate.metrics import RARE_POSITIVE_RATE, confusion
from loopline.evaluate.report_data import Projection, TrainReportData
from loopline.evaluate.threshold import cost_curve, precision_recall_points

MAX_BARS = 25
MAX_POINTS = 2000
PROJECTION_CAPTION = (
    "exploration only: t-SNE/PCA views cannot transform new rows and are never part of the model"
)
_UNIT = (0.0, 1.0)

Scored = tuple[str, NDArray[np.bool_], NDArray[np.float64]]


@dataclass
class Figure:
    """One inline SVG chart and the sentence under it."""

    svg: Markup
    caption: str = ""


def comparison_figure(data: TrainReportData) -> Figure | None:
    """The primary metric of every candidate, CV mean ± std (two candidates or more)."""
    if len(data.candidates) < 2:
        return None
    summaries = [c.cv.summary().get(data.primary_metric, (math.nan, 0.0)) for c in data.candidates]
    svg = charts.bar_chart(
        [c.name for c in data.candidates],
        [s[0] for s in summaries],
        [s[1] for s in summaries],
        title=f"{data.primary_metric} by candidate (CV mean ± std)",
        x_label=data.primary_metric,
    )
    return Figure(Markup(svg))


def binary_figures(data: TrainReportData) -> list[Figure]:
    """ROC and PR (PR first when positives are rare), confusion, threshold, cost, reliability."""
    pos = positive_label(data)
    covered = np.isfinite(np.asarray(data.oof, dtype=float))
    oof: Scored = (
        "out-of-fold",
        np.asarray(data.y_train)[covered] == pos,
        np.asarray(data.oof, dtype=float)[covered],
    )
    holdout: Scored = (
        "holdout",
        np.asarray(data.y_holdout) == pos,
        np.asarray(data.holdout_pred, dtype=float),
    )
    scored = [s for s in (oof, holdout) if s[1].any() and not s[1].all()]
    rate = positive_rate(data)
    curves = [_roc_figure(scored, pos), _pr_figure(scored, rate)]
    figures = curves[::-1] if rate < RARE_POSITIVE_RATE else curves
    figures.append(_confusion_figure(data, pos, holdout[2]))
    if oof in scored:
        figures.extend(_threshold_figures(data, oof))
    if data.calibration is not None:
        mean_pred, frac_pos, counts = data.calibration
        svg = charts.line_chart(
            [Series("model", mean_pred, frac_pos, markers=True)],
            title="reliability (calibration) curve",
            x_label="mean predicted probability",
            y_label="share of positives",
            x_range=_UNIT,
            y_range=_UNIT,
            diagonal=True,
        )
        bins = ", ".join(str(int(c)) for c in counts)
        figures.append(Figure(Markup(svg), f"on the diagonal = calibrated; rows per bin: {bins}"))
    return figures


def _roc_figure(scored: list[Scored], pos: Any) -> Figure:
    series = []
    for name, truth, proba in scored:
        fpr, tpr, _ = skm.roc_curve(truth, proba)
        series.append(Series(f"{name}, AUC {skm.roc_auc_score(truth, proba):.4f}", fpr, tpr))
    svg = charts.line_chart(
        series,
        title="ROC curve",
        x_label="false positive rate",
        y_label="true positive rate",
        x_range=_UNIT,
        y_range=_UNIT,
        diagonal=True,
    )
    return Figure(Markup(svg), f"positive class: {pos}; the diagonal is a model that guesses")


def _pr_figure(scored: list[Scored], rate: float) -> Figure:
    series = []
    for name, truth, proba in scored:
        precision, recall, _ = skm.precision_recall_curve(truth, proba)
        ap = skm.average_precision_score(truth, proba)
        series.append(Series(f"{name}, PR-AUC {ap:.4f}", recall, precision))
    series.append(
        Series(f"guessing (positive rate {rate:.3f})", [0, 1], [rate, rate], "#888", True)
    )
    svg = charts.line_chart(
        series,
        title="precision-recall curve",
        x_label="recall",
        y_label="precision",
        x_range=_UNIT,
        y_range=(0.0, 1.02),
    )
    return Figure(Markup(svg), "PR-AUC is average precision")


def _confusion_figure(data: TrainReportData, pos: Any, proba: NDArray[np.float64]) -> Figure:
    threshold = data.threshold.threshold if data.threshold else 0.5
    neg = next((c for c in classes_of(data) if c != pos), "rest")
    predicted = proba >= threshold
    matrix = confusion(np.asarray(data.y_holdout) == pos, predicted, labels=[False, True])
    (_, fp), (fn, tp) = matrix
    names = [str(neg), str(pos)]
    svg = charts.heatmap(
        matrix, names, names, title=f"confusion matrix, holdout, threshold {threshold:.3f}"
    )
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return Figure(
        Markup(svg),
        f"holdout at threshold {threshold:.3f}: precision {precision:.3f}, recall {recall:.3f}",
    )


def _threshold_figures(data: TrainReportData, oof: Scored) -> list[Figure]:
    _, truth, proba = oof
    choice = data.threshold
    marks = [(choice.threshold, f"chosen {choice.threshold:.3f}")] if choice else []
    points = precision_recall_points(truth, proba, pos_label=True)
    svg = charts.line_chart(
        [
            Series("precision", points.thresholds, points.precision),
            Series("recall", points.thresholds, points.recall),
            Series("F1", points.thresholds, points.f1),
        ],
        title="threshold trade-off (out-of-fold)",
        x_label="threshold (predict positive when probability ≥ it)",
        y_label="score",
        y_range=(0.0, 1.02),
        marks=marks,
    )
    caption = "no threshold chosen: 0.5 applies"
    if choice:
        caption = (
            f"chosen by {choice.strategy}: out-of-fold precision {choice.precision:.3f}, "
            f"recall {choice.recall:.3f}, F1 {choice.f1:.3f}"
        )
    figures = [Figure(Markup(svg), caption)]
    if data.costs is not None or (choice is not None and choice.strategy == "cost"):
        cost_fp, cost_fn = data.costs or (1.0, 1.0)
        curve = cost_curve(truth, proba, cost_fp=cost_fp, cost_fn=cost_fn, pos_label=True)
        svg = charts.line_chart(
            [Series("cost", curve.thresholds, curve.cost)],
            title="misclassification cost (out-of-fold)",
            x_label="threshold",
            y_label="cost",
            marks=marks,
        )
        weights = f"cost = {cost_fp:g} × false positives + {cost_fn:g} × false negatives"
        figures.append(Figure(Markup(svg), weights))
    return figures


def multiclass_figures(data: TrainReportData) -> tuple[list[Figure], list[list[str]]]:
    """The holdout confusion matrix and per-class rows: class, precision, recall, F1,
    one-vs-rest ROC-AUC, support."""
    classes = np.asarray(classes_of(data))
    proba = np.asarray(data.holdout_pred, dtype=float)
    truth = np.asarray(data.y_holdout)
    pred = classes[np.argmax(proba, axis=1)]
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, pred, labels=classes, zero_division=0
    )
    rows = []
    for j, label in enumerate(classes):
        hit = truth == label
        auc = f"{skm.roc_auc_score(hit, proba[:, j]):.4f}" if hit.any() and not hit.all() else ""
        scores = [f"{v:.4f}" for v in (precision[j], recall[j], f1[j])]
        rows.append([str(label), *scores, auc, str(int(support[j]))])
    names = [str(c) for c in classes]
    svg = charts.heatmap(
        confusion(truth, pred, labels=classes),
        names,
        names,
        title="confusion matrix, holdout (most probable class)",
    )
    return [Figure(Markup(svg), "rows: true class; shading: share of the row")], rows


def regression_figures(data: TrainReportData) -> list[Figure]:
    """Predicted vs actual with the diagonal, residuals vs predicted, residual histogram."""
    covered = np.isfinite(np.asarray(data.oof, dtype=float))
    groups = [  # holdout last: drawn on top, orange as in the classification charts
        (
            "out-of-fold",
            np.asarray(data.y_train, dtype=float)[covered],
            np.asarray(data.oof, dtype=float)[covered],
        ),
        (
            "holdout",
            np.asarray(data.y_holdout, dtype=float),
            np.asarray(data.holdout_pred, dtype=float),
        ),
    ]
    scatter = charts.scatter_chart(
        [Series(n, actual, pred) for n, actual, pred in groups],
        title="predicted vs actual",
        x_label="actual",
        y_label="predicted",
        diagonal=True,
        max_points=MAX_POINTS,
    )
    residuals = charts.scatter_chart(
        [Series(n, pred, actual - pred) for n, actual, pred in groups],
        title="residuals vs predicted",
        x_label="predicted",
        y_label="actual − predicted",
        zero_line=True,
        max_points=MAX_POINTS,
    )
    hold = groups[1][1] - groups[1][2]
    histogram = charts.histogram_chart(
        hold, title="residuals, holdout", x_label="actual − predicted"
    )
    spread = f"mean {hold.mean():.4g}, std {hold.std():.4g}" if hold.size else ""
    return [
        Figure(Markup(scatter), "on the dashed diagonal = perfect prediction"),
        Figure(Markup(residuals), "a pattern (funnel, curve) means the model misses structure"),
        Figure(Markup(histogram), spread),
    ]


def importance_figures(data: TrainReportData) -> list[Figure]:
    """Permutation importances (mean ± std) and tree contributions, largest first."""
    figures = []
    if data.importances:
        top = data.importances[:MAX_BARS]
        svg = charts.bar_chart(
            [i.feature for i in top],
            [i.mean for i in top],
            [i.std for i in top],
            title="permutation importance (holdout)",
            x_label="drop in score when the column is shuffled",
        )
        shown = (
            f"top {len(top)} of {len(data.importances)}; "
            if len(top) < len(data.importances)
            else ""
        )
        caption = (
            shown + "mean ± std over repeats; near zero or below: the model does not rely on it"
        )
        figures.append(Figure(Markup(svg), caption))
    if data.tree_contributions:
        top_c = sorted(data.tree_contributions, key=lambda c: -abs(c[1]))[:MAX_BARS]
        svg = charts.bar_chart(
            [c[0] for c in top_c],
            [c[1] for c in top_c],
            title="tree contributions",
            x_label="contribution",
            color=charts.PALETTE[2],
        )
        figures.append(Figure(Markup(svg), "the model's own attribution, on transformed features"))
    return figures


def projection_figure(data: TrainReportData, projection: Projection | None = None) -> Figure | None:
    """A 2-D view (``data.projection`` by default) coloured by label, with the
    exploration-only caption."""
    projection = projection or data.projection
    if projection is None or len(projection.points) == 0:
        return None
    points = np.asarray(projection.points, dtype=float)
    labels = np.asarray(projection.labels)
    labelled = colour_groups(labels)
    binned = np.issubdtype(labels.dtype, np.number) and np.unique(labels).size > 10
    groups = [
        Series(name, points[mask, 0], points[mask, 1], charts.SEQUENTIAL[i] if binned else None)
        for i, (name, mask) in enumerate(labelled)
    ]
    svg = charts.scatter_chart(
        groups,
        title=f"{projection.method} projection of training rows",
        x_label="component 1",
        y_label="component 2",
        max_points=MAX_POINTS,
    )
    return Figure(Markup(svg), PROJECTION_CAPTION)


def colour_groups(labels: NDArray[Any]) -> list[tuple[str, NDArray[np.bool_]]]:
    """Label groups for colouring: categories as they are (the ten most common, the rest
    "other"); more than ten numeric values in quantile bins.

    >>> [name for name, _ in colour_groups(np.array(["b", "a", "b"]))]
    ['b', 'a']
    """
    if np.issubdtype(labels.dtype, np.number) and np.unique(labels).size > 10:
        values = labels.astype(float)
        edges = np.unique(np.nanquantile(values, np.linspace(0, 1, 6)))
        bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)
        return [(f"{edges[b]:.4g} to {edges[b + 1]:.4g}", bins == b) for b in range(edges.size - 1)]
    keys = labels.astype(str)
    values, counts = np.unique(keys, return_counts=True)
    common = values[np.argsort(-counts, kind="stable")][: 9 if values.size > 10 else 10]
    groups = [(str(v), keys == v) for v in common]
    rest = ~np.isin(keys, common)
    if rest.any():
        groups.append(("other", rest))
    return groups


def classes_of(data: TrainReportData) -> list[Any]:
    """``data.classes``, else the sorted classes seen in the training and holdout targets."""
    if data.classes:
        return list(data.classes)
    seen = np.unique(np.concatenate([np.asarray(data.y_train), np.asarray(data.y_holdout)]))
    return list(seen.tolist())


def positive_label(data: TrainReportData) -> Any:
    """``data.positive_class``, else the last class (scikit-learn's ``labels[1]``)."""
    if data.positive_class is not None:
        return data.positive_class
    classes = classes_of(data)
    return classes[-1] if classes else 1


def positive_rate(data: TrainReportData) -> float:
    """Share of the positive class among the training rows."""
    truth = np.asarray(data.y_train)
    return float(np.mean(truth == positive_label(data))) if truth.size else math.nan
