"""Co-visitation on hand-made histories: counts, normalisation, top-k."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from loopline.errors import TrainError
from loopline.train.recommender.covisitation import (
    covisitation,
    covisitation_counts,
    neighbour_matrix,
    top_k_rows,
)
from loopline.train.recommender.data import Interactions

# u1 watches a b c d in order, u2 watches d c (with a repeat of c), u3 watches a then b
# much later; interleaved in time so that sorting by time matters.
HISTORY = Interactions.from_columns(
    ["u1", "u2", "u1", "u2", "u1", "u2", "u1", "u3", "u3"],
    ["a", "d", "b", "c", "c", "c", "d", "a", "b"],
    [1, 2, 3, 4, 5, 6, 7, 8, 100],
)


def test_counts_pair_items_within_the_window_of_one_users_history() -> None:
    counts = covisitation_counts(HISTORY, window=1).toarray()

    # a-b twice (u1, u3), b-c once, c-d twice (u1, u2); c-c (u2's repeat) never counts
    expected = np.zeros((4, 4))
    for i, j, n in [(0, 1, 2), (1, 2, 1), (2, 3, 2)]:
        expected[i, j] = expected[j, i] = n
    assert counts.tolist() == expected.tolist()


def test_a_wider_window_adds_pairs_further_apart() -> None:
    counts = covisitation_counts(HISTORY, window=2).toarray()

    # u1: a-c and b-d two apart; u2: d-c two apart (d c c): c-d once more
    assert counts[0, 2] == counts[2, 0] == 1
    assert counts[1, 3] == counts[3, 1] == 1
    assert counts[2, 3] == 3
    assert np.allclose(counts, counts.T)
    assert np.all(np.diag(counts) == 0)


def test_neighbours_are_normalised_by_popularity_and_sorted() -> None:
    neighbours, scores = covisitation(HISTORY, window=1, neighbours=2)

    # popularity: a 2, b 2, c 3, d 2
    assert neighbours.tolist() == [[1, -1], [0, 2], [3, 1], [2, -1]]
    assert scores[0, 0] == pytest.approx(2 / np.sqrt(2 * 2))
    assert scores[1, 1] == pytest.approx(1 / np.sqrt(2 * 3))
    assert scores[2, 0] == pytest.approx(2 / np.sqrt(3 * 2))
    assert scores.dtype == np.float32
    assert neighbours.dtype == np.int32


def test_top_k_keeps_the_largest_and_pads() -> None:
    matrix = sp.csr_matrix(np.array([[0, 1, 5, 3], [0, 0, 0, 0], [2, 2, 2, 0]], dtype=float))

    indices, values = top_k_rows(matrix, 3)

    assert indices.tolist() == [[2, 3, 1], [-1, -1, -1], [0, 1, 2]]
    assert values.tolist() == [[5, 3, 1], [0, 0, 0], [2, 2, 2]]


def test_the_neighbour_matrix_sums_neighbour_scores_of_a_history() -> None:
    neighbours, scores = covisitation(HISTORY, window=1, neighbours=2)
    history = sp.csr_matrix(np.array([[1.0, 0.0, 0.0, 1.0]]))  # a and d

    total = (history @ neighbour_matrix(neighbours, scores)).toarray()[0]

    assert total[1] == pytest.approx(scores[0, 0])  # b: neighbour of a
    assert total[2] == pytest.approx(scores[3, 0])  # c: neighbour of d
    assert total[0] == total[3] == 0


def test_the_window_must_be_positive() -> None:
    with pytest.raises(TrainError, match="'window' parameter"):
        covisitation_counts(HISTORY, window=0)
