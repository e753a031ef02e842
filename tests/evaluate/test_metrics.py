from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from loopline.errors import EvaluationError
from loopline.evaluate.metrics import (
    BINARY_METRICS,
    MULTICLASS_METRICS,
    SKLEARN_SCORING,
    confusion,
    greater_is_better,
    primary_metric,
    score_all,
    sklearn_scoring,
)

Y_REG = np.array([3.0, 0.5, 2.0, 7.0, 4.2, 1.1])
P_REG = np.array([2.5, 0.7, 2.1, 8.0, 3.9, 0.9])


def test_regression_metrics_equal_scikit_learn() -> None:
    scores = score_all("regression", Y_REG, y_pred=P_REG)
    assert scores == pytest.approx(
        {
            "mse": skm.mean_squared_error(Y_REG, P_REG),
            "rmse": skm.root_mean_squared_error(Y_REG, P_REG),
            "mae": skm.mean_absolute_error(Y_REG, P_REG),
            "r2": skm.r2_score(Y_REG, P_REG),
            "mape": skm.mean_absolute_percentage_error(Y_REG, P_REG),
            "rmsle": skm.root_mean_squared_log_error(Y_REG, P_REG),
        }
    )


def test_rmsle_is_omitted_when_a_value_is_negative() -> None:
    assert "rmsle" not in score_all("regression", Y_REG - 1.0, y_pred=P_REG)
    assert "rmsle" not in score_all("regression", Y_REG, y_pred=P_REG - 1.0)


def test_binary_metrics_equal_scikit_learn_at_the_threshold(binary_scores) -> None:
    y, proba = binary_scores
    pred = (proba >= 0.6).astype(int)
    scores = score_all("binary", y, y_proba=proba, threshold=0.6)
    assert list(scores) == list(BINARY_METRICS)
    assert scores == pytest.approx(
        {
            "accuracy": skm.accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred),
            "recall": skm.recall_score(y, pred),
            "f1": skm.f1_score(y, pred),
            "roc_auc": skm.roc_auc_score(y, proba),
            "pr_auc": skm.average_precision_score(y, proba),
            "log_loss": skm.log_loss(y, proba),
            "brier": skm.brier_score_loss(y, proba),
            "mcc": skm.matthews_corrcoef(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        }
    )


def test_binary_string_labels_take_the_second_sorted_label_as_positive(binary_scores) -> None:
    y, proba = binary_scores
    named = np.where(y == 1, "Yes", "No")
    assert score_all("binary", named, y_proba=proba) == pytest.approx(
        score_all("binary", y, y_proba=proba)
    )


def test_binary_two_column_proba_uses_the_positive_column(binary_scores) -> None:
    y, proba = binary_scores
    both = np.column_stack([1 - proba, proba])
    assert score_all("binary", y, y_proba=both) == score_all("binary", y, y_proba=proba)


def test_binary_labels_only_leave_out_probability_metrics() -> None:
    scores = score_all("binary", [0, 1, 1, 0, 1], y_pred=[0, 1, 0, 0, 1])
    assert set(scores) == {"accuracy", "precision", "recall", "f1", "mcc", "balanced_accuracy"}
    assert scores["recall"] == pytest.approx(2 / 3)


def test_multiclass_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 20)
    raw = rng.uniform(size=(60, 3)) + np.eye(3)[np.repeat([0, 1, 2], 20)] * 0.5
    proba = raw / raw.sum(axis=1, keepdims=True)
    pred = np.array(["a", "b", "c"])[proba.argmax(axis=1)]
    scores = score_all("multiclass", y, y_proba=proba)
    assert list(scores) == list(MULTICLASS_METRICS)
    assert scores == pytest.approx(
        {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "f1_macro": skm.f1_score(y, pred, average="macro"),
            "f1_weighted": skm.f1_score(y, pred, average="weighted"),
            "precision_macro": skm.precision_score(y, pred, average="macro"),
            "recall_macro": skm.recall_score(y, pred, average="macro"),
            "roc_auc_ovr": skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"),
            "log_loss": skm.log_loss(y, proba),
        }
    )


def test_roc_auc_with_one_class_in_y_true_is_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match="both classes") as info:
        score_all("binary", [1, 1, 1], y_proba=[0.2, 0.9, 0.4], labels=[0, 1])
    assert info.value.fields["metric"] == "roc_auc"
    assert info.value.hint


def test_multiclass_missing_class_in_y_true_is_a_clear_error() -> None:
    proba = np.full((4, 3), 1 / 3)
    with pytest.raises(EvaluationError, match="every class") as info:
        score_all("multiclass", [0, 1, 0, 1], y_proba=proba, labels=[0, 1, 2])
    assert info.value.fields["missing_classes"] == [2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y_pred": [0, 1], "y_proba": [0.1, 0.9]}, "exactly one of"),
        ({}, "exactly one of"),
        ({"y_proba": [0.1, 0.9, 0.3]}, "3 rows but y_true has 2"),
        ({"y_proba": [0.1, 1.7]}, r"within \[0, 1\]"),
        ({"y_pred": [0, 5]}, "not in labels"),
    ],
)
def test_bad_classification_inputs_are_clear_errors(kwargs, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        score_all("binary", [0, 1], **kwargs)


def test_regression_without_predictions_is_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match="needs y_pred"):
        score_all("regression", Y_REG, y_proba=P_REG)


def test_confusion_is_plain_ints_in_label_order() -> None:
    matrix = confusion(["b", "a", "b", "b"], ["b", "b", "a", "b"], labels=["b", "a"])
    assert matrix == [[2, 1], [1, 0]]
    assert all(type(v) is int for row in matrix for v in row)


@pytest.mark.parametrize(
    ("task", "rate", "expected"),
    [
        ("regression", None, "rmse"),
        ("binary", 0.05, "pr_auc"),
        ("binary", 0.19, "pr_auc"),
        ("binary", 0.2, "roc_auc"),
        ("binary", 0.5, "roc_auc"),
        ("multiclass", None, "f1_macro"),
    ],
)
def test_primary_metric(task, rate, expected) -> None:
    assert primary_metric(task, rate) == expected


def test_primary_metric_of_a_binary_task_needs_the_positive_rate() -> None:
    with pytest.raises(EvaluationError, match="positive class share"):
        primary_metric("binary")


def test_greater_is_better_for_scores_not_for_losses() -> None:
    assert greater_is_better("roc_auc")
    assert greater_is_better("r2")
    assert not any(greater_is_better(m) for m in ("rmse", "log_loss", "brier", "mape"))
    with pytest.raises(EvaluationError, match="unknown metric"):
        greater_is_better("auc")


def test_every_metric_maps_to_a_real_scikit_learn_scorer() -> None:
    known = set(skm.get_scorer_names())
    assert all(sklearn_scoring(m) in known for m in SKLEARN_SCORING)
