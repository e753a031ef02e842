"""How one recommendation is scored: the parts over the whole catalogue, their mix per
strategy, the top ``k`` (the semantics are in :mod:`loopline.serve.recommend.online`).

:class:`Catalogue` holds what the hot path needs of one model version, computed once: item
ids and positions, popularity over the top, the training interactions, and bounded caches
of what depends only on the user and its live history. :class:`Ranking` scores one request
from a :class:`~loopline.serve.recommend.state.Snapshot` of the live state.

>>> from loopline.train.recommender import RecommenderModel
>>> from loopline.serve.recommend.state import Snapshot
>>> served = Catalogue(RecommenderModel.example())
>>> [r["item"] for r in Ranking(served, Snapshot(history=[]), 1, 0.5).rank(2, (), "blend")]
['d', 'b']
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from loopline.config.serving import Strategy
from loopline.serve.recommend.state import Snapshot
from loopline.train.recommender.model import DEFAULT_RECENCY_DECAY, RecommenderModel

__all__ = ["CACHE_BYTES", "FOLD_IN_CACHE", "Catalogue", "Ranking", "top_indices"]

TRENDING_PRIOR = 0.05
"""Share of the trending score added to ``blend``."""
POPULAR_PRIOR = 0.01
"""Share of the popularity score that orders ``covisit``'s items without a session signal."""
TRENDING_SHARE = 0.5
"""Share of live trending (vs training popularity) in ``popular``."""
POSITION_DECAY = DEFAULT_RECENCY_DECAY
"""Weight of a session item ``n`` events back: ``POSITION_DECAY ** n`` (as offline)."""
FOLD_IN_CACHE = 4096
"""Fold-in user vectors kept per model version, the most recently used."""
CACHE_BYTES = 64 << 20
"""Memory for the dense per-user caches of a model version, half each (~540 users for 8,000
items): ALS scores (per user and live history) and offline co-visitation (per user and
session). A user asking again with the same history skips the fold-in and both scorings."""

V = TypeVar("V")
_Part = tuple[str, float, np.ndarray, dict[str, float]]
"""``(reason, weight, dense scores, new-item scores)``: one part of a strategy's mix."""


class Catalogue:
    """What the hot path needs of one model version, computed once instead of per request."""

    def __init__(self, model: RecommenderModel) -> None:
        self.model = model
        self.n = len(model.items)
        self.ids: list[str] = [str(item) for item in model.items.tolist()]
        self.positions = {item: n for n, item in enumerate(self.ids)}  # id -> catalogue index
        pop = model.popularity.astype(np.float64)
        top = float(pop.max(initial=0.0))
        self.popular = pop / top if top > 0 else pop  # over the top, as the part uses it
        self.popular.flags.writeable = False
        seen = model.seen
        self.seen_ptr: list[int] = seen.indptr.tolist()
        self.seen_items: np.ndarray = seen.indices
        self.seen_confidences: np.ndarray = seen.data
        # (user index, live history or session as (items, weights)) -> the cached result
        size = CACHE_BYTES // (2 * 8 * max(self.n, 1))  # float64 arrays of n scores
        self.vectors: _Recent[np.ndarray] = _Recent(FOLD_IN_CACHE)
        self.als: _Recent[np.ndarray] = _Recent(size)
        self.offline: _Recent[tuple[bool, np.ndarray | None]] = _Recent(size)

    def seen(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """Item indices and confidences of a training user's interactions."""
        start, end = self.seen_ptr[u], self.seen_ptr[u + 1]
        return self.seen_items[start:end], self.seen_confidences[start:end]


class _Recent(Generic[V]):
    """The ``size`` most recently used entries of a cache, shared by threads without a lock:
    each step is one atomic dict operation (at worst two requests compute the same entry)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[Any, ...], V] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            with contextlib.suppress(KeyError):  # evicted meanwhile
                self.entries.move_to_end(key)
        return value

    def put(self, key: tuple[Any, ...], value: V) -> None:
        self.entries[key] = value
        while len(self.entries) > self.size:
            with contextlib.suppress(KeyError):  # emptied meanwhile
                self.entries.popitem(last=False)


def _scaled(values: np.ndarray) -> np.ndarray:
    """Divide by the largest absolute value (all zeros stay zeros), as ``blend_scores``; in
    place (``values`` is a fresh array)."""
    top = max(float(values.max(initial=0.0)), -float(values.min(initial=0.0)))
    return np.divide(values, top, out=values) if top > 0 else values


class Ranking:
    """The scores of one request: dense over the catalogue, plus a dict for new items."""

    def __init__(
        self,
        served: Catalogue,
        snap: Snapshot,
        user_index: int | None,
        session_weight: float,
    ) -> None:
        self.served = served
        self.model = served.model
        self.session_weight = session_weight
        self.snap = snap
        self.user_index = user_index
        self.n = served.n
        # live history: summed weights per item (ALS) and position-decayed (session)
        totals: dict[str, float] = {}
        session: dict[str, float] = {}
        covisits = snap.covisits
        for position, entry in enumerate(snap.history):
            item = entry.item
            totals[item] = totals.get(item, 0.0) + entry.weight
            if item in covisits:  # the window's distinct items
                session[item] = session.get(item, 0.0) + entry.weight * (POSITION_DECAY**position)
        self.history_items = totals
        self.session = session

    def _known(self, weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        index = self.served.positions.get
        idx: list[int] = []
        w: list[float] = []
        for item, weight in weights.items():
            j = index(item)
            if j is not None:
                idx.append(j)
                w.append(weight)
        return np.array(idx, dtype=np.int64), np.array(w, dtype=np.float64)

    def als(self) -> np.ndarray | None:
        """ALS scores over the top (read-only: cached per user and live history)."""
        u, history = self.user_index, self.history_items
        key = (u, tuple(history), tuple(history.values()))
        cache = self.served.als
        scores = cache.get(key)
        if scores is not None:
            return scores
        vector = self._fold_in(key) if history else None
        if vector is None:
            if u is None:
                return None
            vector = self.model.user_factors[u]
        # model.scores without BLAS: a multi-threaded BLAS matrix-vector product on a busy
        # 2-core server took ~40 ms instead of ~0.1 ms (thread hand-offs); einsum stays in
        # this thread whatever the process's BLAS settings
        raw = np.einsum("ij,j->i", self.model.item_factors, np.asarray(vector, dtype=np.float32))
        scores = _scaled(raw.astype(np.float64))
        scores.flags.writeable = False
        cache.put(key, scores)
        return scores

    def _fold_in(self, key: tuple[Any, ...]) -> np.ndarray | None:
        """The user vector re-solved with the live history (None: no known item in it)."""
        cache = self.served.vectors
        vector = cache.get(key)
        if vector is not None:
            return vector
        idx, w = self._known(self.history_items)
        if idx.size == 0:
            return None
        model, u = self.model, self.user_index
        if u is None:
            vector = model.fold_in(idx, w)
        else:
            seen, confidences = self.served.seen(u)
            vector = model.fold_in(
                np.concatenate([seen, idx]),
                np.concatenate([confidences, model.confidence(w)]),
                confidences=True,
            )
        cache.put(key, vector)
        return vector

    def _offline(self) -> tuple[bool, np.ndarray | None]:
        """The offline co-visitation part: whether it has a signal, and its scores over the
        top (None: no positive score; read-only: cached per user and session)."""
        session = self.session
        key = (self.user_index, tuple(session), tuple(session.values()))
        cached = self.served.offline.get(key)
        if cached is not None:
            return cached
        idx, w = self._known(session)
        if not session and self.user_index is not None:  # the training items, weight 1
            idx = self.served.seen(self.user_index)[0].astype(np.int64)
            w = np.ones(idx.size)
        offline = self.model.covisit_scores(idx, w).astype(np.float64) if idx.size else None
        scaled = None
        if offline is not None:
            top = float(offline.max())
            if top > 0:
                scaled = np.divide(offline, top, out=offline)
                scaled.flags.writeable = False
        part = (offline is not None and bool(offline.any()), scaled)
        self.served.offline.put(key, part)
        return part

    def covisit(self) -> tuple[np.ndarray, dict[str, float]] | None:
        signal, offline = self._offline()
        # live co-visitation, summed in the same order as a dense array would
        live: dict[int, float] = {}
        extra: dict[str, float] = {}
        index = self.served.positions.get
        covisits = self.snap.covisits
        for source, weight in self.session.items():
            for item, count in covisits.get(source, {}).items():
                j = index(item)
                if j is None:
                    extra[item] = extra.get(item, 0.0) + weight * count
                else:
                    live[j] = live.get(j, 0.0) + weight * count
        live_max = max(0.0, max(live.values(), default=0.0), max(extra.values(), default=0.0))
        if not signal and live_max <= 0:
            return None
        total = offline.copy() if offline is not None else np.zeros(self.n)
        if live_max > 0:
            if live:
                js = np.fromiter(live, dtype=np.int64, count=len(live))
                total[js] += np.fromiter(live.values(), dtype=np.float64, count=len(live)) / (
                    live_max
                )
            extra = {item: v / live_max for item, v in extra.items()}
        top = max(float(total.max()), max(extra.values(), default=0.0))
        return np.divide(total, top, out=total), {item: v / top for item, v in extra.items()}

    def trending(self) -> tuple[np.ndarray, dict[str, float]]:
        dense = np.zeros(self.n)
        extra: dict[str, float] = {}
        if not self.snap.trending:
            return dense, extra
        top = self.snap.trending[0][1]
        index = self.served.positions.get
        js: list[int] = []
        values: list[float] = []
        for item, score in self.snap.trending:
            j = index(item)
            if j is None:
                extra[item] = score / top
            else:
                js.append(j)
                values.append(score / top)
        dense[js] = values
        return dense, extra

    def parts(self, strategy: Strategy) -> list[_Part]:
        """``(reason, weight, dense scores, new-item scores)`` of the strategy's mix."""
        none: dict[str, float] = {}
        popular = self.served.popular
        if strategy == "als":
            als = self.als()
            if als is not None:
                return [("als", 1.0, als, none)]
        elif strategy == "covisit":
            cov = self.covisit()
            if cov is not None:
                return [("covisit", 1.0, *cov), ("popular", POPULAR_PRIOR, popular, none)]
        elif strategy == "blend":
            als, cov = self.als(), self.covisit()
            if als is not None or cov is not None:
                mix: list[_Part] = []
                share = self.session_weight if als is not None else 1.0
                if als is not None:
                    mix.append(("als", 1.0 - share if cov is not None else 1.0, als, none))
                if cov is not None:
                    mix.append(("covisit", share, *cov))
                mix.append(("trending", TRENDING_PRIOR, *self.trending()))
                return mix
        trend, trend_new = self.trending()
        if not trend_new and not trend.any():
            return [("popular", 1.0, popular, none)]
        return [
            ("popular", 1.0 - TRENDING_SHARE, popular, none),
            ("trending", TRENDING_SHARE, trend, trend_new),
        ]

    def rank(self, k: int, exclude: Sequence[str], strategy: Strategy) -> list[dict[str, Any]]:
        mix = [part for part in self.parts(strategy) if part[1] > 0]
        score = np.zeros(self.n)
        scratch = np.empty(self.n)
        new_scores: dict[str, float] = {}
        for _, weight, dense, extra in mix:
            score += np.multiply(dense, weight, out=scratch)
            for item, value in extra.items():
                new_scores[item] = new_scores.get(item, 0.0) + weight * value
        blocked = set(self.history_items)
        blocked.update(str(e) for e in exclude)
        index = self.served.positions.get
        score[[j for j in map(index, blocked) if j is not None]] = -np.inf
        if self.user_index is not None:
            score[self.served.seen(self.user_index)[0]] = -np.inf
        ids = self.served.ids
        # (score, catalogue position: new items after the catalogue, id, index or -1)
        candidates = [(float(score[j]), j, ids[j], j) for j in top_indices(score, k).tolist()]
        candidates += [
            (v, self.n, item, -1) for item, v in new_scores.items() if item not in blocked
        ]
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        out: list[dict[str, Any]] = []
        for value, _, item, j in candidates[:k]:
            if value == -np.inf:
                break
            out.append({"item": item, "score": round(value, 6), "reason": _reason(mix, j, item)})
        return out


def _reason(mix: list[_Part], j: int, item: str) -> str:
    """The part that contributed most to one item's score (ties: the first in the mix)."""
    best, best_value = mix[0][0], -1.0
    for reason, weight, dense, extra in mix:
        value = weight * (float(dense[j]) if j >= 0 else extra.get(item, 0.0))
        if value > best_value:
            best, best_value = reason, value
    return best


TOP_GROUP = 64
"""Scores per group in :func:`top_indices`'s first pass."""


def top_indices(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite scores, best first (ties: the smaller index).

    Without a partition of the whole catalogue (~60 us for 8,000 items): cut the scores into
    groups (``score[g::groups]``), then the ``k``-th largest of the group maxima bounds the
    ``k``-th largest score from below, and the scores at or above it (about ``k``) hold the
    answer.
    """
    n = score.size
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    groups = n // TOP_GROUP
    candidates: np.ndarray | None = None
    if groups > k:
        maxima = score[: groups * TOP_GROUP].reshape(TOP_GROUP, groups).max(axis=0)
        bound = np.partition(maxima, groups - k)[groups - k]
        if np.isfinite(bound):
            candidates = np.flatnonzero(score >= bound)
    if candidates is None or candidates.size < k:  # few finite groups (or NaN): all finite
        candidates = np.flatnonzero(np.isfinite(score))
    order = np.lexsort((candidates, -score[candidates]))[:k]
    chosen: np.ndarray = candidates[order]
    return chosen
