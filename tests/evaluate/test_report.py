"""The training report, rendered from small real fits (scikit-learn models, real CV)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn import metrics as skm
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from loopline.config.training import Task, ThresholdConfig
from loopline.errors import EvaluationError
from loopline.evaluate import (
    choose_threshold,
    compare_models,
    cross_validate,
    cv_splitter,
    holdout_split,
    permutation_importances,
    primary_metric,
    reliability_curve,
    score_all,
)
from loopline.evaluate.report import write_train_report
from loopline.evaluate.report_data import CandidateOutcome, Projection, TrainReportData
from loopline.evaluate.report_figures import PROJECTION_CAPTION

HOSTILE = "<script>alert('x')</script>"
SVG = re.compile(r"<svg\b.*?</svg>", re.DOTALL)


def build_report_data(
    task: Task,
    factories: dict[str, Callable[[], Any]],
    *,
    n_samples: int = 300,
    weights: list[float] | None = None,
    costs: tuple[float, float] | None = None,
) -> TrainReportData:
    """A TrainReportData as a training job would fill it, from real fits."""
    X: NDArray[np.float64]
    if task == "regression":
        X, y = make_regression(n_samples=n_samples, n_features=4, noise=10.0, random_state=0)
    else:
        X, y = make_classification(
            n_samples=n_samples,
            n_features=4,
            n_informative=3,
            n_redundant=0,
            n_classes=3 if task == "multiclass" else 2,
            weights=weights,
            random_state=0,
        )
    train, test = holdout_split(y, test_size=0.25, strategy="auto", seed=0, task=task)
    kind = "kfold" if task == "regression" else "stratified"
    splitter = cv_splitter(kind, task=task, folds=5, seed=0)
    results = {
        name: cross_validate(factory, X[train], y[train], splitter, task=task)
        for name, factory in factories.items()
    }
    rate = float(np.mean(y[train] == 1)) if task == "binary" else None
    primary = primary_metric(task, rate)
    comparison = compare_models(results, primary)
    best = comparison[0].model
    model = factories[best]().fit(X[train], y[train])
    names = ["income", HOSTILE, "age", "tenure"]
    data = TrainReportData(
        job=f"job {HOSTILE}",
        task=task,
        target="label",
        data_source="warehouse.customers",
        rows=n_samples,
        n_train=train.size,
        n_test=test.size,
        primary_metric=primary,
        candidates=[
            CandidateOutcome(name, {"C": 1.0}, result, trials=1, search_seconds=0.1)
            for name, result in results.items()
        ],
        comparison=comparison,
        best=best,
        y_train=y[train],
        oof=results[best].oof,
        y_holdout=y[test],
        holdout_pred=np.zeros(0),
        holdout_metrics={},
        roles=[(name, "numeric", "float column") for name in names],
        importances=permutation_importances(
            model, X[test], y[test], scoring=primary, n_repeats=3, seed=0, feature_names=names
        ),
        projection=Projection("pca", PCA(2).fit_transform(X[train]), y[train]),
        notes=[f"a note about {HOSTILE}"],
        costs=costs,
    )
    if task == "regression":
        data.holdout_pred = model.predict(X[test])
        data.holdout_metrics = score_all(task, y[test], y_pred=data.holdout_pred)
        return data
    proba = model.predict_proba(X[test])
    data.classes = [int(c) for c in np.unique(y)]
    if task == "multiclass":
        data.holdout_pred = proba
        data.holdout_metrics = score_all(task, y[test], y_proba=proba)
        return data
    data.positive_class = 1
    data.holdout_pred = proba[:, 1]
    config = ThresholdConfig(strategy="cost", cost_fn=5.0) if costs else ThresholdConfig()
    data.threshold = choose_threshold(y[train], results[best].oof, config)
    data.holdout_metrics = score_all(
        task, y[test], y_proba=data.holdout_pred, threshold=data.threshold.threshold
    )
    data.calibration = reliability_curve(y[test], data.holdout_pred, n_bins=5)
    return data


def _logistic(c: float) -> Callable[[], LogisticRegression]:
    return lambda: LogisticRegression(C=c)


BINARY = {
    "logistic": _logistic(1.0),
    "logistic_c09": _logistic(0.9),
    "prior": lambda: DummyClassifier(strategy="prior"),
}


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(page: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def table_with(page: str, first_header: str, second_header: str) -> list[list[str]]:
    return next(
        t for t in tables(page) if t[0][:2] == [first_header, second_header] and len(t[0]) > 1
    )


def svg_by_title(page: str, prefix: str) -> ET.Element:
    for svg in SVG.findall(page):
        root = ET.fromstring(svg)
        if (root.get("aria-label") or "").startswith(prefix):
            return root
    raise AssertionError(f"no chart titled {prefix!r}")


def cell_counts(heatmap: ET.Element) -> list[int]:
    """The count printed in each confusion-matrix cell, row by row."""
    return [int(str(g.find("text").text).replace(",", "")) for g in heatmap.iter("g")]  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def binary_data() -> TrainReportData:
    return build_report_data("binary", BINARY, weights=[0.6])


@pytest.fixture(scope="module")
def binary_page(binary_data: TrainReportData, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_train_report(binary_data, tmp_path_factory.mktemp("r") / "sub" / "binary.html")
    return path.read_text(encoding="utf-8")


def test_report_file_is_written_where_asked(binary_data: TrainReportData, tmp_path: Path) -> None:
    path = write_train_report(binary_data, tmp_path / "a" / "b" / "report.html")
    assert path == tmp_path / "a" / "b" / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_binary_report_has_every_section(binary_page: str) -> None:
    for section in (
        'id="summary"',
        'id="candidates"',
        'id="binary"',
        'id="importance"',
        'id="projection"',
        'id="features"',
        'aria-label="ROC curve"',
        'aria-label="precision-recall curve"',
        'aria-label="threshold trade-off (out-of-fold)"',
        'aria-label="reliability (calibration) curve"',
        'aria-label="permutation importance (holdout)"',
        "confusion matrix, holdout, threshold",
        PROJECTION_CAPTION,
    ):
        assert section in binary_page, section
    assert "misclassification cost" not in binary_page  # no cost strategy, no costs given


def test_every_chart_is_well_formed_xml(binary_page: str) -> None:
    svgs = SVG.findall(binary_page)
    assert len(svgs) >= 8
    for svg in svgs:
        assert ET.fromstring(svg).tag == "svg"


def test_printed_aucs_equal_scikit_learn(binary_data: TrainReportData, binary_page: str) -> None:
    covered = np.isfinite(binary_data.oof)
    expected = {
        "holdout": (binary_data.y_holdout, binary_data.holdout_pred),
        "out-of-fold": (binary_data.y_train[covered], binary_data.oof[covered]),
    }
    for name, (truth, proba) in expected.items():
        auc = re.search(rf"{name}, AUC (\d\.\d{{4}})", binary_page)
        ap = re.search(rf"{name}, PR-AUC (\d\.\d{{4}})", binary_page)
        assert auc is not None
        assert ap is not None
        assert float(auc.group(1)) == round(skm.roc_auc_score(truth, proba), 4)
        assert float(ap.group(1)) == round(skm.average_precision_score(truth, proba), 4)


def test_confusion_matrix_applies_the_chosen_threshold_to_the_holdout(
    binary_data: TrainReportData, binary_page: str
) -> None:
    assert binary_data.threshold is not None
    threshold = binary_data.threshold.threshold
    expected = skm.confusion_matrix(binary_data.y_holdout, binary_data.holdout_pred >= threshold)
    root = svg_by_title(binary_page, "confusion matrix")
    counts = cell_counts(root)
    assert counts == expected.ravel().tolist()
    assert f"threshold {threshold:.3f}" in (root.get("aria-label") or "")


def test_candidate_table_reports_the_t_test_against_the_best(
    binary_data: TrainReportData, binary_page: str
) -> None:
    table = table_with(binary_page, "candidate", binary_data.primary_metric)
    assert table[0][2:6] == ["diff vs best", "t", "p", "verdict"]
    rows = {row[0]: row for row in table[1:]}
    assert set(rows) == set(BINARY)
    for comparison in binary_data.comparison:
        row = rows[comparison.model]
        if comparison.is_best:
            assert row[5] == "best"
            continue
        expected = "significant" if comparison.p_value < 0.05 else "not significant"
        assert row[5] == expected
        assert row[2] == f"{comparison.diff:+.4f}"
    assert rows["prior"][5] == "significant"  # a model that guesses is really worse
    assert "not significant" in [row[5] for row in rows.values()]  # C=0.9 vs C=1: noise


def test_every_candidate_shows_mean_and_std_of_every_metric(
    binary_data: TrainReportData, binary_page: str
) -> None:
    table = table_with(binary_page, "candidate", binary_data.primary_metric)
    for candidate in binary_data.candidates:
        row = next(r for r in table[1:] if r[0] == candidate.name)
        mean, std = candidate.cv.summary()["accuracy"]
        assert f"{mean:.4f} ± {std:.4f}" in row


def test_fold_table_is_the_best_candidates_cv_table(
    binary_data: TrainReportData, binary_page: str
) -> None:
    best = next(c for c in binary_data.candidates if c.name == binary_data.best)
    table = table_with(binary_page, "fold", "n_train")
    expected = best.cv.table()
    assert [row[0] for row in table[1:]] == [str(row["fold"]) for row in expected]
    column = table[0].index("roc_auc")
    assert [row[column] for row in table[1:]] == [f"{row['roc_auc']:.4f}" for row in expected]


def test_summary_puts_the_primary_metric_first_beside_the_holdout(
    binary_data: TrainReportData, binary_page: str
) -> None:
    table = table_with(binary_page, "metric", "cross-validation (mean ± std)")
    assert table[1][0] == "roc_auc"  # ~40% positives: not rare
    assert table[1][2] == f"{binary_data.holdout_metrics['roc_auc']:.4f}"
    assert binary_page.index('aria-label="ROC curve"') < binary_page.index(
        'aria-label="precision-recall curve"'
    )


def test_rare_positive_class_shows_pr_auc_first(tmp_path: Path) -> None:
    data = build_report_data("binary", {"logistic": _logistic(1.0)}, n_samples=400, weights=[0.88])
    assert data.primary_metric == "pr_auc"
    page = write_train_report(data, tmp_path / "rare.html").read_text(encoding="utf-8")
    summary = table_with(page, "metric", "cross-validation (mean ± std)")
    order = [row[0] for row in summary[1:]]
    assert order[0] == "pr_auc"
    assert order.index("pr_auc") < order.index("roc_auc")
    assert page.index('aria-label="precision-recall curve"') < page.index('aria-label="ROC curve"')


def test_cost_curve_is_drawn_with_the_cost_weights(tmp_path: Path) -> None:
    data = build_report_data("binary", {"logistic": _logistic(1.0)}, costs=(1.0, 5.0))
    page = write_train_report(data, tmp_path / "cost.html").read_text(encoding="utf-8")
    svg_by_title(page, "misclassification cost (out-of-fold)")
    assert "cost = 1 × false positives + 5 × false negatives" in page
    assert "(cost, chosen on out-of-fold predictions)" in page


def test_report_is_self_contained(binary_page: str) -> None:
    assert "http://" not in binary_page
    assert "https://" not in binary_page
    assert "<link" not in binary_page
    assert " src=" not in binary_page
    assert "@import" not in binary_page
    assert "url(" not in binary_page


def test_hostile_strings_are_escaped_everywhere(binary_page: str) -> None:
    assert "<script" not in binary_page
    assert "&lt;script&gt;" in binary_page
    roles = table_with(binary_page, "column", "role")
    assert [HOSTILE, "numeric", "float column"] in roles  # decoded text equals the name
    importance = svg_by_title(binary_page, "permutation importance")
    labels = [t.text for t in importance.iter("text")]
    assert any(label and label.startswith("<script>") for label in labels)


def test_mlflow_ids_are_shown_only_when_set(binary_data: TrainReportData, tmp_path: Path) -> None:
    page = write_train_report(binary_data, tmp_path / "none.html").read_text(encoding="utf-8")
    assert "MLflow run" not in page
    assert "model version" not in page
    tracked = TrainReportData(**{**vars(binary_data), "mlflow_run_id": "abc123"})
    tracked.model_version = "7"
    page = write_train_report(tracked, tmp_path / "ids.html").read_text(encoding="utf-8")
    header = tables(page)[0]
    assert ["MLflow run", "abc123"] in header
    assert ["model version", "7"] in header


def test_regression_report_shows_predictions_and_residuals(tmp_path: Path) -> None:
    data = build_report_data(
        "regression",
        {"ridge": Ridge, "tree": lambda: DecisionTreeRegressor(max_depth=3, random_state=0)},
        n_samples=2800,
    )
    page = write_train_report(data, tmp_path / "reg.html").read_text(encoding="utf-8")
    for title in ("predicted vs actual", "residuals vs predicted", "residuals, holdout"):
        svg_by_title(page, title)
    scatter = svg_by_title(page, "predicted vs actual")
    assert 1900 <= len(list(scatter.iter("circle"))) <= 2000  # 2,800 points sub-sampled
    assert "ROC curve" not in page
    assert "confusion matrix" not in page
    summary = table_with(page, "metric", "cross-validation (mean ± std)")
    assert summary[1][0] == "rmse ↓"
    rmse = skm.root_mean_squared_error(data.y_holdout, data.holdout_pred)
    assert summary[1][2] == f"{rmse:.4f}"
    for svg in SVG.findall(page):
        ET.fromstring(svg)


def test_multiclass_report_has_per_class_metrics_and_confusion(tmp_path: Path) -> None:
    data = build_report_data("multiclass", {"logistic": _logistic(1.0)})
    page = write_train_report(data, tmp_path / "multi.html").read_text(encoding="utf-8")
    table = table_with(page, "class", "precision")
    pred = np.argmax(data.holdout_pred, axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(data.y_holdout, pred)
    assert [row[0] for row in table[1:]] == ["0", "1", "2"]
    assert [row[1] for row in table[1:]] == [f"{v:.4f}" for v in precision]
    assert [row[2] for row in table[1:]] == [f"{v:.4f}" for v in recall]
    assert [row[3] for row in table[1:]] == [f"{v:.4f}" for v in f1]
    assert [row[5] for row in table[1:]] == [str(v) for v in support]
    root = svg_by_title(page, "confusion matrix, holdout")
    counts = cell_counts(root)
    assert counts == skm.confusion_matrix(data.y_holdout, pred).ravel().tolist()
    assert "threshold trade-off" not in page


def test_minimal_data_with_string_labels_renders(tmp_path: Path) -> None:
    """No threshold, comparison, importances or projection; classes "No" / "Yes"."""
    X, y01 = make_classification(n_samples=200, random_state=1)
    y = np.where(y01 == 1, "Yes", "No")
    splitter = cv_splitter("stratified", task="binary", folds=3, seed=0)
    cv = cross_validate(LogisticRegression, X[:150], y[:150], splitter, task="binary")
    proba = LogisticRegression().fit(X[:150], y[:150]).predict_proba(X[150:])[:, 1]
    data = TrainReportData(
        job="j",
        task="binary",
        target="churn",
        data_source="churn.csv",
        rows=200,
        n_train=150,
        n_test=50,
        primary_metric="roc_auc",
        candidates=[CandidateOutcome("lr", {}, cv, trials=1, search_seconds=0.0)],
        comparison=[],
        best="lr",
        y_train=y[:150],
        oof=cv.oof,
        y_holdout=y[150:],
        holdout_pred=proba,
        holdout_metrics=score_all("binary", y[150:], y_proba=proba),
    )
    page = write_train_report(data, tmp_path / "min.html").read_text(encoding="utf-8")
    assert "positive class: Yes" in page
    auc = re.search(r"holdout, AUC (\d\.\d{4})", page)
    assert auc is not None
    assert float(auc.group(1)) == round(skm.roc_auc_score(y[150:] == "Yes", proba), 4)
    root = svg_by_title(page, "confusion matrix, holdout, threshold 0.500")
    expected = skm.confusion_matrix(y[150:], np.where(proba >= 0.5, "Yes", "No"))
    assert cell_counts(root) == expected.ravel().tolist()
    assert 'id="importance"' not in page
    assert 'id="projection"' not in page


def test_unknown_best_candidate_is_an_evaluation_error(
    binary_data: TrainReportData, tmp_path: Path
) -> None:
    broken = TrainReportData(**{**vars(binary_data), "best": "nope"})
    with pytest.raises(EvaluationError, match="not among the candidates") as info:
        write_train_report(broken, tmp_path / "x.html")
    assert info.value.fields["best"] == "nope"
    assert info.value.hint
    assert not (tmp_path / "x.html").exists()


def test_misaligned_predictions_are_an_evaluation_error(
    binary_data: TrainReportData, tmp_path: Path
) -> None:
    broken = TrainReportData(**{**vars(binary_data), "oof": binary_data.oof[:-1]})
    with pytest.raises(EvaluationError, match="oof has") as info:
        write_train_report(broken, tmp_path / "x.html")
    assert info.value.fields["field"] == "oof"
