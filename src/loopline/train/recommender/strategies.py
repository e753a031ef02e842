"""Batch rankings of the four strategies for many users at once: evaluation and pyfunc.

``popular`` ranks by training popularity; ``als`` by the user's ALS factors; ``covisit`` by
the co-visitation neighbours of the user's latest items (recency-weighted), popularity
breaking ties (so a user whose items have no neighbours still gets a full list); ``blend``
mixes ALS and co-visitation (:func:`~loopline.train.recommender.model.blend_scores`).
Already-seen training items are excluded from every ranking. Scores are dense
(users x items) matrices: fine for hundreds of users at a time; :func:`recommend` works in
chunks of :data:`CHUNK` users.

>>> model = RecommenderModel.example()
>>> recommend(model, np.array([0, 1]), "als", k=2).tolist()
[[3, 2], [3, 1]]
>>> recommend(model, np.array([1]), "popular", k=3).tolist()
[[0, 1, 3]]
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from loopline.errors import TrainError
from loopline.train.recommender.covisitation import neighbour_matrix
from loopline.train.recommender.model import (
    DEFAULT_RECENCY_DECAY,
    DEFAULT_RECENT_ITEMS,
    DEFAULT_SESSION_WEIGHT,
    RecommenderModel,
    blend_scores,
)

__all__ = ["CHUNK", "STRATEGIES", "Strategy", "recent_history", "recommend", "strategy_scores"]

Strategy = Literal["popular", "als", "covisit", "blend"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
"""Every strategy, the baseline first."""

CHUNK = 512
"""Users scored together (a dense chunk x items score matrix)."""

_TIE_BREAK = 1e-6  # popularity's share in co-visitation scores: orders items without neighbours


def recent_history(
    user: NDArray[np.int64],
    item: NDArray[np.int64],
    shape: tuple[int, int],
    *,
    recent: int = DEFAULT_RECENT_ITEMS,
    decay: float = DEFAULT_RECENCY_DECAY,
) -> sp.csr_matrix:
    """(users x items) weights of each user's ``recent`` latest interactions.

    ``user`` / ``item`` are interactions in time order; the newest of a user weighs 1, the
    one before ``decay``, and so on (repeats add up).

    >>> recent_history(np.array([0, 0, 1, 0]), np.array([0, 1, 2, 2]), (2, 3),
    ...                recent=2, decay=0.5).toarray().tolist()
    [[0.0, 0.5, 1.0], [0.0, 0.0, 1.0]]
    """
    order = np.argsort(user, kind="stable")
    u, i = user[order], item[order]
    counts = np.bincount(u, minlength=shape[0])
    ends = np.cumsum(counts)
    age = ends[u] - 1 - np.arange(u.size)  # 0 for a user's newest interaction
    keep = age < recent
    history = sp.csr_matrix(
        (decay ** age[keep].astype(np.float64), (u[keep], i[keep])), shape=shape
    )
    history.sum_duplicates()
    return history


def strategy_scores(
    model: RecommenderModel,
    strategy: Strategy,
    users: NDArray[np.int64],
    history: sp.csr_matrix | None = None,
    *,
    session_weight: float = DEFAULT_SESSION_WEIGHT,
    neighbours: sp.csr_matrix | None = None,
) -> NDArray[np.float32]:
    """Dense (len(users) x items) scores of ``strategy`` for training-user indices ``users``.

    ``history``: (len(users) x items) recent-item weights for co-visitation (default: from
    :attr:`RecommenderModel.seen`, every seen item weighing 1).
    """
    n_items = len(model.items)
    if strategy == "popular":
        return np.broadcast_to(model.popularity, (len(users), n_items)).astype(np.float32)
    if strategy not in STRATEGIES:
        raise TrainError(f"unknown strategy {strategy!r}", hint=f"use one of {STRATEGIES}")
    als: NDArray[np.float32] | None = None
    if strategy != "covisit":
        als = np.asarray(model.user_factors[users] @ model.item_factors.T, dtype=np.float32)
    if strategy == "als":
        assert als is not None
        return als
    if history is None:
        history = (model.seen[users] > 0).astype(np.float32)
    matrix = (
        neighbours
        if neighbours is not None
        else neighbour_matrix(model.neighbours, model.neighbour_scores)
    )
    covisit = np.asarray((history @ matrix).todense(), dtype=np.float32)
    if strategy == "covisit":
        top = float(model.popularity.max(initial=0.0)) or 1.0
        tie_break = ((_TIE_BREAK / top) * model.popularity).astype(np.float32)
        result: NDArray[np.float32] = covisit + tie_break
        return result
    assert als is not None
    return blend_scores(als, covisit, session_weight).astype(np.float32)


def top_items(scores: NDArray[np.float32], exclude: sp.csr_matrix, k: int) -> NDArray[np.int64]:
    """The ``k`` best-scored items per row, best first, skipping ``exclude``'s non-zeros
    (``-1`` where a row has fewer than ``k`` candidates)."""
    masked = np.array(scores, dtype=np.float32, copy=True)
    rows, cols = exclude.nonzero()
    masked[rows, cols] = -np.inf
    k = min(k, masked.shape[1])
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(masked, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best[np.take_along_axis(part_scores, order, axis=1) == -np.inf] = -1
    return best


def recommend(
    model: RecommenderModel,
    users: NDArray[np.int64],
    strategy: Strategy,
    *,
    k: int,
    history: sp.csr_matrix | None = None,
    session_weight: float = DEFAULT_SESSION_WEIGHT,
) -> NDArray[np.int64]:
    """Top-``k`` item indices (users x k, ``-1`` padded) of ``strategy``, seen items excluded.

    ``history``: recent-item weights of ``users`` (rows in the same order); default: their
    seen items. Scored in chunks of :data:`CHUNK` users.
    """
    neighbours = (
        neighbour_matrix(model.neighbours, model.neighbour_scores)
        if strategy in ("covisit", "blend")
        else None
    )
    out = np.full((len(users), min(k, len(model.items))), -1, dtype=np.int64)
    for start in range(0, len(users), CHUNK):
        chunk = users[start : start + CHUNK]
        part = None if history is None else history[start : start + CHUNK]
        scores = strategy_scores(
            model, strategy, chunk, part, session_weight=session_weight, neighbours=neighbours
        )
        out[start : start + CHUNK] = top_items(scores, model.seen[chunk], k)
    return out
