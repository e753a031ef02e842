"""Item-item co-visitation: items that follow each other closely in users' histories.

Every user's interactions are taken in time order; each pair of items at most ``window``
positions apart counts once for both directions (symmetric counts, an item never pairs with
itself). Counts are normalised by the items' popularity, ``c_ij / sqrt(n_i * n_j)`` (a
cosine: a blockbuster does not become everyone's neighbour), and each item keeps its top
``neighbours`` by that score. All of it is sparse-matrix arithmetic, no loop over pairs.

>>> data = Interactions.from_columns(
...     ["u", "u", "u", "v", "v"], ["a", "b", "c", "a", "b"], [1, 2, 3, 4, 5])
>>> nbrs, scores = covisitation(data, window=1, neighbours=2)
>>> nbrs.tolist()
[[1, -1], [0, 2], [1, -1]]
>>> scores.astype(float).round(3).tolist()
[[1.0, 0.0], [1.0, 0.707], [0.707, 0.0]]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from loopline.errors import TrainError
from loopline.train.recommender.data import Interactions

__all__ = [
    "DEFAULT_WINDOW",
    "covisitation",
    "covisitation_counts",
    "neighbour_matrix",
    "top_k_rows",
]

DEFAULT_WINDOW = 5
"""Items up to this many positions apart in a user's history count as co-visited."""


def covisitation_counts(data: Interactions, window: int) -> sp.csr_matrix:
    """Symmetric (items x items) co-visitation counts of ``data`` (see the module docstring)."""
    if window < 1:
        raise TrainError(f"The 'window' parameter must be an int >= 1. Got {window!r} instead.")
    order = np.argsort(data.user, kind="stable")  # data is in time order: stays so per user
    user, item = data.user[order], data.item[order]
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    for gap in range(1, min(window, max(len(item) - 1, 1)) + 1):
        same = (user[:-gap] == user[gap:]) & (item[:-gap] != item[gap:])
        rows.append(item[:-gap][same])
        cols.append(item[gap:][same])
    a = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    b = np.concatenate(cols) if cols else np.empty(0, dtype=np.int64)
    n = len(data.items)
    counts = sp.csr_matrix(
        (np.ones(2 * a.size), (np.concatenate([a, b]), np.concatenate([b, a]))),
        shape=(n, n),
        dtype=np.float64,
    )
    counts.sum_duplicates()
    return counts


def top_k_rows(matrix: sp.csr_matrix, k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Each row's ``k`` largest entries: column indices (``-1`` padded) and values.

    Ties go to the smaller column index.

    >>> m = sp.csr_matrix(np.array([[0, 3, 1], [2, 0, 2], [0, 0, 0]], dtype=float))
    >>> idx, val = top_k_rows(m, 2)
    >>> idx.tolist(), val.tolist()
    ([[1, 2], [0, 2], [-1, -1]], [[3.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    """
    m = matrix.tocsr()
    m.eliminate_zeros()
    n_rows = m.shape[0]
    rows = np.repeat(np.arange(n_rows), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data, rows))
    rows, cols, vals = rows[order], m.indices[order], m.data[order]
    rank = np.arange(rows.size) - m.indptr[rows]
    keep = rank < k
    indices = np.full((n_rows, k), -1, dtype=np.int32)
    values = np.zeros((n_rows, k), dtype=np.float32)
    indices[rows[keep], rank[keep]] = cols[keep]
    values[rows[keep], rank[keep]] = vals[keep]
    return indices, values


def covisitation(
    data: Interactions, *, window: int = DEFAULT_WINDOW, neighbours: int = 50
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Each item's top ``neighbours`` co-visited items and their normalised scores."""
    counts = covisitation_counts(data, window)
    popularity = np.bincount(data.item, minlength=len(data.items)).astype(np.float64)
    scale = sp.diags(1.0 / np.sqrt(np.maximum(popularity, 1.0)))
    normalised = (scale @ counts @ scale).tocsr()
    return top_k_rows(normalised, neighbours)


def neighbour_matrix(neighbours: NDArray[np.int32], scores: NDArray[np.float32]) -> sp.csr_matrix:
    """The (items x items) sparse matrix of kept neighbour scores, for batch scoring:
    ``history @ neighbour_matrix`` sums the neighbour scores of every history item.

    >>> neighbour_matrix(np.array([[1, -1], [0, -1]]), np.array([[0.5, 0], [0.5, 0]])).toarray()
    array([[0. , 0.5],
           [0.5, 0. ]], dtype=float32)
    """
    n = neighbours.shape[0]
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    cols = neighbours.ravel()
    keep = cols >= 0
    return sp.csr_matrix(
        (scores.ravel()[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n, n)
    )
