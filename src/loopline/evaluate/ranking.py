"""Ranking metrics of top-k recommendations: precision@k, recall@k, NDCG@k, coverage.

Pure NumPy, vectorised over users. A ranking is one row of ``recommended``: item indices,
best first, ``-1`` where fewer than ``k`` items were recommended. ``relevant`` holds, per
user, the item indices that count as hits (the held-out interactions of a temporal split).

- precision@k: hits in the top k, divided by k (a short list is not rewarded);
- recall@k: hits in the top k, divided by the number of relevant items;
- NDCG@k: binary-relevance DCG (``1 / log2(rank + 1)``, rank from 1) over the ideal DCG of
  ``min(k, relevant)`` hits at the top;
- catalogue coverage: the share of the catalogue recommended to at least one user.

Users without relevant items have no recall or NDCG: leave them out (the evaluation keeps
users with held-out items only); here they score 0.

>>> recommended = np.array([[3, 1, 2], [0, 4, -1]])
>>> relevant = [np.array([1, 5]), np.array([0])]
>>> scores = ranking_metrics(recommended, relevant, k=3, n_items=6)
>>> {m: round(v, 4) for m, v in scores.items()}
{'precision_at_3': 0.3333, 'recall_at_3': 0.75, 'ndcg_at_3': 0.6934, 'coverage': 0.8333}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loopline.errors import EvaluationError

__all__ = [
    "RANKING_METRICS",
    "catalogue_coverage",
    "hit_matrix",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
]

RANKING_METRICS = ("precision", "recall", "ndcg", "coverage")
"""The metrics :func:`ranking_metrics` reports (the first three as ``<name>_at_<k>``)."""


def _ranked(recommended: ArrayLike, k: int) -> NDArray[np.int64]:
    if k < 1:
        raise EvaluationError(f"The 'k' parameter must be an int >= 1. Got {k!r} instead.")
    ranked = np.asarray(recommended, dtype=np.int64)
    if ranked.ndim != 2:
        raise EvaluationError(
            f"recommendations must be a 2-D array (users x ranks), got {ranked.ndim} dimension(s)"
        )
    return ranked[:, :k]


def hit_matrix(recommended: ArrayLike, relevant: Sequence[ArrayLike]) -> NDArray[np.bool_]:
    """``hits[u, r]``: whether the item at rank ``r`` of user ``u`` is relevant to ``u``.

    One ``np.isin`` over (user, item) codes: no loop per pair.

    >>> hit_matrix(np.array([[2, 0, -1], [1, 2, 3]]), [np.array([0]), np.array([3, 2])])
    array([[False,  True, False],
           [False,  True,  True]])
    """
    ranked = np.asarray(recommended, dtype=np.int64)
    if ranked.ndim != 2 or len(ranked) != len(relevant):
        raise EvaluationError(
            f"recommendations for {len(ranked)} users but relevant items for {len(relevant)}",
            hint="give one ranking row and one relevant set per user",
        )
    sizes = np.fromiter((np.size(r) for r in relevant), dtype=np.int64, count=len(relevant))
    if sizes.sum() == 0:
        return np.zeros(ranked.shape, dtype=bool)
    truth = np.concatenate([np.asarray(r, dtype=np.int64).ravel() for r in relevant])
    width = int(max(ranked.max(initial=0), truth.max(initial=0))) + 1
    truth_codes = np.repeat(np.arange(len(relevant), dtype=np.int64), sizes) * width + truth
    codes = np.arange(len(ranked), dtype=np.int64)[:, None] * width + ranked
    hits: NDArray[np.bool_] = np.isin(codes, truth_codes) & (ranked >= 0)
    return hits


def precision_at_k(hits: NDArray[np.bool_], k: int) -> NDArray[np.float64]:
    """Per user: relevant items among the top ``k``, divided by ``k``.

    >>> precision_at_k(np.array([[True, False, True, False]]), k=2)
    array([0.5])
    """
    _ranked(hits, k)
    result: NDArray[np.float64] = hits[:, :k].sum(axis=1) / k
    return result


def recall_at_k(hits: NDArray[np.bool_], n_relevant: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per user: relevant items among the top ``k``, divided by all relevant items (0 if none).

    >>> recall_at_k(np.array([[True, False, True]]), [4], k=3)
    array([0.5])
    """
    _ranked(hits, k)
    total = np.asarray(n_relevant, dtype=np.float64)
    found = hits[:, :k].sum(axis=1).astype(np.float64)
    result: NDArray[np.float64] = np.divide(found, total, out=np.zeros_like(found), where=total > 0)
    return result


def ndcg_at_k(hits: NDArray[np.bool_], n_relevant: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per user: binary-relevance NDCG of the top ``k`` (0 for a user without relevant items).

    >>> ndcg_at_k(np.array([[True, False], [False, True]]), [1, 1], k=2).round(4)
    array([1.    , 0.6309])
    """
    _ranked(hits, k)
    top = hits[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = top @ discounts
    ideal_hits = np.minimum(np.asarray(n_relevant, dtype=np.int64), top.shape[1])
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_hits]
    result: NDArray[np.float64] = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
    return result


def catalogue_coverage(recommended: ArrayLike, n_items: int) -> float:
    """Share of the ``n_items`` catalogue recommended to at least one user (``-1`` ignored).

    >>> catalogue_coverage(np.array([[0, 1], [1, -1]]), n_items=4)
    0.5
    """
    if n_items < 1:
        raise EvaluationError(
            f"The 'n_items' parameter must be an int >= 1. Got {n_items!r} instead."
        )
    ranked = np.asarray(recommended, dtype=np.int64)
    shown = np.unique(ranked[ranked >= 0])
    return float(shown.size / n_items)


def ranking_metrics(
    recommended: ArrayLike, relevant: Sequence[ArrayLike], *, k: int, n_items: int
) -> dict[str, float]:
    """Mean precision@k, recall@k and NDCG@k over users, and catalogue coverage of the top k.

    Keys: ``precision_at_<k>``, ``recall_at_<k>``, ``ndcg_at_<k>``, ``coverage``.
    """
    ranked = _ranked(recommended, k)
    if len(ranked) == 0:
        raise EvaluationError(
            "no users to evaluate the rankings on",
            hint="the test period needs users who also have training interactions",
        )
    hits = hit_matrix(ranked, relevant)
    sizes = np.fromiter((np.size(r) for r in relevant), dtype=np.int64, count=len(relevant))
    return {
        f"precision_at_{k}": float(precision_at_k(hits, k).mean()),
        f"recall_at_{k}": float(recall_at_k(hits, sizes, k).mean()),
        f"ndcg_at_{k}": float(ndcg_at_k(hits, sizes, k).mean()),
        "coverage": catalogue_coverage(ranked, n_items),
    }
