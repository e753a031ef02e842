"""Ranking metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopline.errors import EvaluationError
from loopline.evaluate.ranking import (
    catalogue_coverage,
    hit_matrix,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)


def test_hits_mark_relevant_items_at_their_ranks_and_ignore_padding() -> None:
    recommended = np.array([[5, 2, 7, -1], [0, 1, 2, 3], [9, 9, 9, 9]])
    relevant = [np.array([7, 5]), np.array([], dtype=np.int64), np.array([1])]

    hits = hit_matrix(recommended, relevant)

    assert hits.tolist() == [
        [True, False, True, False],
        [False, False, False, False],
        [False, False, False, False],
    ]


def test_precision_divides_by_k_even_for_short_lists() -> None:
    hits = np.array([[True, False, True, False, False], [False, False, False, False, False]])

    assert precision_at_k(hits, 5).tolist() == [0.4, 0.0]
    assert precision_at_k(hits, 3).tolist() == pytest.approx([2 / 3, 0.0])


def test_recall_divides_by_the_relevant_count_and_is_zero_without_relevant_items() -> None:
    hits = np.array([[True, False, True], [True, True, True], [False, False, False]])

    assert recall_at_k(hits, [4, 3, 0], 3).tolist() == [0.5, 1.0, 0.0]
    assert recall_at_k(hits, [4, 3, 0], 1).tolist() == [0.25, 1 / 3, 0.0]


def test_ndcg_matches_the_textbook_formula() -> None:
    # hits at ranks 1 and 3, three relevant items: DCG = 1 + 1/log2(4); ideal = 1 + 1/log2(3)
    # + 1/log2(4).
    hits = np.array([[True, False, True, False]])
    dcg = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)

    assert ndcg_at_k(hits, [3], 4)[0] == pytest.approx(dcg / ideal)
    # one relevant item found at rank 2: 1/log2(3) over an ideal of 1
    assert ndcg_at_k(np.array([[False, True]]), [1], 2)[0] == pytest.approx(1 / math.log2(3))
    # a perfect ranking scores 1, an empty one 0
    assert ndcg_at_k(np.array([[True, True], [False, False]]), [2, 2], 2).tolist() == [1.0, 0.0]


def test_coverage_counts_distinct_recommended_items() -> None:
    recommended = np.array([[0, 1, 2], [2, 1, 0], [3, -1, -1]])

    assert catalogue_coverage(recommended, n_items=8) == 0.5


def test_ranking_metrics_average_over_users() -> None:
    recommended = np.array([[3, 1, 2], [0, 4, -1]])
    relevant = [np.array([1, 5]), np.array([0])]

    scores = ranking_metrics(recommended, relevant, k=3, n_items=6)

    ndcg_first = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert scores == pytest.approx(
        {
            "precision_at_3": 1 / 3,
            "recall_at_3": 0.75,
            "ndcg_at_3": (ndcg_first + 1) / 2,
            "coverage": 5 / 6,
        }
    )


def test_ranking_metrics_cut_longer_lists_at_k() -> None:
    recommended = np.array([[9, 8, 0]])

    scores = ranking_metrics(recommended, [np.array([0])], k=2, n_items=10)

    assert scores == {"precision_at_2": 0.0, "recall_at_2": 0.0, "ndcg_at_2": 0.0, "coverage": 0.2}


def test_bad_input_is_an_evaluation_error() -> None:
    with pytest.raises(EvaluationError, match="'k' parameter"):
        ranking_metrics(np.array([[0]]), [np.array([0])], k=0, n_items=1)
    with pytest.raises(EvaluationError, match="no users"):
        ranking_metrics(np.empty((0, 3)), [], k=3, n_items=5)
    with pytest.raises(EvaluationError, match="2 users but relevant items for 1"):
        hit_matrix(np.array([[0], [1]]), [np.array([0])])
