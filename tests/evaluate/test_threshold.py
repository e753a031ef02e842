from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_curve

from loopline.config.training import ThresholdConfig
from loopline.errors import EvaluationError
from loopline.evaluate.threshold import choose_threshold, cost_curve, precision_recall_points

# Four positives (0.35, 0.6, 0.7, 0.9) among six negatives; worked out by hand:
# at 0.35 every positive is caught with 2 false positives (F1 0.8, the maximum),
# at 0.6 recall is 0.75 with precision 0.75, at 0.9 precision is 1 with recall 0.25.
Y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 0, 1])
P = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])


@pytest.mark.parametrize(
    ("config", "threshold", "precision", "recall"),
    [
        (ThresholdConfig(strategy="max_f1"), 0.35, 4 / 6, 1.0),
        (ThresholdConfig(strategy="target_recall", value=0.75), 0.6, 0.75, 0.75),
        (ThresholdConfig(strategy="target_recall", value=1.0), 0.35, 4 / 6, 1.0),
        (ThresholdConfig(strategy="target_precision", value=0.7), 0.6, 0.75, 0.75),
        (ThresholdConfig(strategy="target_precision", value=0.9), 0.9, 1.0, 0.25),
        (ThresholdConfig(strategy="cost", cost_fp=1, cost_fn=5), 0.35, 4 / 6, 1.0),
        (ThresholdConfig(strategy="cost", cost_fp=5, cost_fn=1), 0.9, 1.0, 0.25),
        (ThresholdConfig(strategy="fixed", value=0.5), 0.5, 0.75, 0.75),
    ],
)
def test_each_strategy_finds_the_known_threshold(config, threshold, precision, recall) -> None:
    choice = choose_threshold(Y, P, config)
    assert choice.threshold == pytest.approx(threshold)
    assert (choice.precision, choice.recall) == pytest.approx((precision, recall))
    assert choice.f1 == pytest.approx(f1_score(Y, choice.threshold <= P))
    assert choice.strategy == config.strategy


def test_the_chosen_cost_is_the_weighted_error_count() -> None:
    choice = choose_threshold(Y, P, ThresholdConfig(strategy="cost", cost_fp=5, cost_fn=1))
    assert choice.cost == 3.0  # three positives missed, no false positive


def test_cost_may_choose_to_predict_nothing_positive() -> None:
    config = ThresholdConfig(strategy="cost", cost_fp=5, cost_fn=1)
    choice = choose_threshold([1, 0], [0.2, 0.9], config)
    assert choice.threshold > 0.9
    assert (choice.recall, choice.cost) == (0.0, 1.0)


def test_unreachable_precision_is_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match="no threshold reaches precision") as info:
        choose_threshold(
            [1, 0, 1], [0.2, 0.9, 0.5], ThresholdConfig(strategy="target_precision", value=0.9)
        )
    assert info.value.fields["best_precision"] == 0.6667


def test_precision_recall_points_equal_scikit_learn(binary_scores) -> None:
    y, proba = binary_scores
    points = precision_recall_points(y, proba)
    precision, recall, thresholds = precision_recall_curve(y, proba)
    assert points.thresholds == pytest.approx(thresholds)
    assert points.precision == pytest.approx(precision[:-1])
    assert points.recall == pytest.approx(recall[:-1])


def test_cost_curve_counts_errors_at_each_threshold() -> None:
    curve = cost_curve(Y, P, cost_fp=2, cost_fn=3)
    at = int(np.flatnonzero(curve.thresholds == 0.6)[0])
    assert (curve.false_positives[at], curve.false_negatives[at]) == (1, 1)
    assert curve.cost[at] == 5.0
    assert (curve.false_positives[-1], curve.false_negatives[-1]) == (0, 4)


def test_string_labels_need_the_positive_label() -> None:
    named = np.where(Y == 1, "churn", "stay")
    config = ThresholdConfig(strategy="max_f1")
    assert choose_threshold(named, P, config, pos_label="churn").threshold == pytest.approx(0.35)
    with pytest.raises(EvaluationError, match="both classes"):
        choose_threshold(named, P, config)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 1], [0.2, np.nan, 0.3], "NaN"),
        ([0, 1], [0.2, 0.4, 0.5], "same length"),
        ([1, 1], [0.2, 0.4], "both classes"),
        ([0, 1, 2], [0.2, 0.4, 0.5], "binary"),
    ],
)
def test_bad_inputs_are_clear_errors(y, p, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        choose_threshold(y, p, ThresholdConfig())


def test_negative_costs_are_rejected() -> None:
    with pytest.raises(EvaluationError, match="non-negative"):
        cost_curve(Y, P, cost_fp=-1)
