"""The real-time recommender: a registered offline model blended with the live session signal.

:meth:`OnlineRecommender.record` applies an event to the live state at once, so the very
next :meth:`OnlineRecommender.recommend` reflects it. The parts of a score, each over the
whole catalogue:

- ``als``: the offline ALS score of the user's vector, divided by its largest absolute
  value. A training user with live events, or a new user with events on known items, gets a
  vector re-solved by :meth:`RecommenderModel.fold_in` from the training interactions plus
  the live history (event weights as implicit feedback);
- ``covisit``: the session signal. The session is the ``WINDOW`` (20) most recent distinct
  items of the live history, each weighing ``event weight * 0.9 ** events back``; with no
  live history, a training user's training items (weight 1 each, as offline evaluation does).
  Offline co-visitation neighbours of the session items, and the live co-visitation counts
  of the live session items, are each divided by their largest value, summed, and divided by
  the largest sum. Items unknown to the model (new items) get only the live part;
- ``trending``: live counts with exponential decay (``trending_half_life``), over the top;
- ``popular``: training interaction counts, over the top.

Strategies: ``blend`` = ``(1 - session_weight) * als + session_weight * covisit
+ 0.05 * trending`` (the offline ``blend_scores`` plus a trending prior; a part that is
missing leaves the other one at weight 1); ``als`` alone; ``covisit`` plus 0.01 * popular
to order items without neighbours; ``popular`` = ``0.5 * popular + 0.5 * trending`` (all
popular while nothing is trending). A user with nothing to go on (unknown to the model and
no live events, or a strategy whose part is missing) gets ``popular``.

Items the user interacted with in training or in the live history, and ``exclude`` ids,
are never returned; at most ``k`` items come back, best first, ties broken by catalogue
order (new items after, by id). ``reason`` names the part that contributed most.

>>> from loopline.config.serving import RecommenderServeConfig
>>> from loopline.train.recommender import RecommenderModel
>>> rec = OnlineRecommender(RecommenderModel.example(), RecommenderServeConfig(model="m"))
>>> [r["item"] for r in rec.recommend("u2", 2)]   # u2 saw c: d is its nearest item
['d', 'b']
>>> rec.record("new-user", "a", "view", None)
>>> [(r["item"], r["reason"]) for r in rec.recommend("new-user", 1, strategy="covisit")]
[('b', 'covisit')]
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.config.serving import RecommenderServeConfig, Strategy
from loopline.errors import ServeError
from loopline.serve.recommend.state import MemoryState, RecommenderState, Snapshot
from loopline.train.recommender.model import (
    DEFAULT_RECENCY_DECAY,
    DEFAULT_RECENT_ITEMS,
    RecommenderModel,
    load_recommender,
)

if TYPE_CHECKING:
    from loopline.registry import ModelRegistry, VersionInfo
    from loopline.serve.alias_watch import AliasWatcher

__all__ = ["STRATEGIES", "OnlineRecommender"]

log = logging.getLogger(__name__)

STRATEGIES: tuple[Strategy, ...] = ("blend", "als", "covisit", "popular")
TRENDING_PRIOR = 0.05
"""Share of the trending score added to ``blend``."""
POPULAR_PRIOR = 0.01
"""Share of the popularity score that orders ``covisit``'s items without a session signal."""
TRENDING_SHARE = 0.5
"""Share of live trending (vs training popularity) in ``popular``."""
POSITION_DECAY = DEFAULT_RECENCY_DECAY
"""Weight of a session item ``n`` events back: ``POSITION_DECAY ** n`` (as offline)."""
WINDOW = DEFAULT_RECENT_ITEMS
"""Recent distinct items that make the session (and pair up in live co-visitation)."""


class OnlineRecommender:
    """Recommendations from an offline :class:`RecommenderModel` plus live state."""

    def __init__(
        self,
        model: RecommenderModel,
        config: RecommenderServeConfig,
        *,
        state: RecommenderState | None = None,
        version: VersionInfo | None = None,
    ) -> None:
        bad = {k: v for k, v in config.event_weights.items() if not v > 0}
        if bad:
            raise ServeError(
                f"event weights must be > 0, got {bad}",
                hint="set serve.recommender.event_weights to positive numbers",
            )
        self.config = config
        self.state: RecommenderState = state or MemoryState(
            history_size=config.history_size,
            neighbours=_neighbours(model),
            window=WINDOW,
            half_life=config.trending_half_life,
        )
        self._served = (model, _positions(model))
        self._version = version
        self._watcher: AliasWatcher[RecommenderModel] | None = None
        self._swap_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        config: RecommenderServeConfig,
        registry: ModelRegistry,
        *,
        poll_interval: float | None = 5.0,
    ) -> OnlineRecommender:
        """Load ``config.model`` at ``config.alias`` and follow the alias every
        ``poll_interval`` seconds (None: never). State: Redis at ``config.state_url``
        (keys prefixed ``loopline:rec:<model>:``), else in the process."""
        from loopline.serve.alias_watch import AliasWatcher

        model, info = load_recommender(registry, config.model, config.alias)
        state: RecommenderState | None = None
        if config.state_url:
            from loopline.serve.recommend.redis_state import RedisState

            state = RedisState(
                config.state_url,
                prefix=f"loopline:rec:{config.model}:",
                history_size=config.history_size,
                neighbours=_neighbours(model),
                window=WINDOW,
                half_life=config.trending_half_life,
            )
        rec = cls(model, config, state=state, version=info)
        if poll_interval is not None:
            watcher: AliasWatcher[RecommenderModel] = AliasWatcher(
                registry,
                config.model,
                config.alias,
                load=lambda _info: load_recommender(registry, config.model, config.alias)[0],
                on_swap=rec.swap,
                poll_interval=poll_interval,
            )
            watcher.version = info.version
            watcher.start()
            rec._watcher = watcher
        log.info(
            "recommender %s@%s: version %s, %d users x %d items, state %s",
            config.model,
            config.alias,
            info.version,
            len(model.users),
            len(model.items),
            "redis" if config.state_url else "in-process",
        )
        return rec

    # ---- serving ----------------------------------------------------------------------------

    @property
    def model(self) -> RecommenderModel:
        return self._served[0]

    @property
    def version(self) -> str | None:
        """The registered version served (None: a model given directly)."""
        return self._version.version if self._version is not None else None

    @property
    def remote_state(self) -> bool:
        """True when the state is in another process (Redis): calls block on the network."""
        return not isinstance(self.state, MemoryState)

    @property
    def event_types(self) -> list[str]:
        return sorted(self.config.event_weights)

    def swap(self, info: VersionInfo, model: RecommenderModel) -> None:
        """Serve ``model`` from now on (requests in flight finish on the old one). The live
        state is kept: it is keyed by item ids, which the new version shares."""
        with self._swap_lock:
            self._served, self._version = (model, _positions(model)), info

    def refresh(self) -> bool:
        """Look at the alias now (instead of at the next poll); True if a new version was
        swapped in. False as well when the alias is not followed."""
        return self._watcher.check_now() if self._watcher is not None else False

    def record(self, user: str, item: str, event_type: str, timestamp: datetime | None) -> None:
        """Apply one event to the live state (history, co-visitation, trending) now.
        ``timestamp`` None: now; a naive one is taken as UTC."""
        weight = self.config.event_weights.get(event_type)
        if weight is None:
            raise ServeError(
                f"unknown event type {event_type!r}",
                event_type=event_type,
                hint=f"use one of {self.event_types} (serve.recommender.event_weights)",
            )
        if timestamp is None:
            seconds = time.time()
        elif timestamp.tzinfo is None:
            seconds = timestamp.replace(tzinfo=UTC).timestamp()
        else:
            seconds = timestamp.timestamp()
        self.state.record(str(user), str(item), float(weight), seconds)

    def recommend(
        self,
        user: str,
        k: int,
        *,
        exclude: Sequence[str] = (),
        strategy: Strategy = "blend",
    ) -> list[dict[str, Any]]:
        """At most ``k`` items for ``user``, best first: ``{"item", "score", "reason"}``."""
        if strategy not in STRATEGIES:
            raise ServeError(f"unknown strategy {strategy!r}", hint=f"use one of {STRATEGIES}")
        if k <= 0:
            return []
        model, positions = self._served  # one version for the request, whatever swaps meanwhile
        snap = self.state.snapshot(str(user), trending=max(100, k + 50))
        ranking = _Ranking(
            model, positions, snap, model.user_index(str(user)), self.config.session_weight
        )
        return ranking.rank(k, exclude, strategy)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        self.state.close()


def _positions(model: RecommenderModel) -> dict[str, int]:
    """Item id -> catalogue index (the hot path's lookup, built once per model)."""
    return {str(item): n for n, item in enumerate(model.items.tolist())}


def _neighbours(model: RecommenderModel) -> int:
    return max(50, int(model.neighbours.shape[1]))


def _scaled(values: np.ndarray) -> np.ndarray:
    """Divide by the largest absolute value (all zeros stay zeros), as ``blend_scores``."""
    top = float(np.abs(values).max(initial=0.0))
    return values / top if top > 0 else values


class _Ranking:
    """The scores of one request: dense over the catalogue, plus a dict for new items."""

    def __init__(
        self,
        model: RecommenderModel,
        positions: dict[str, int],
        snap: Snapshot,
        user_index: int | None,
        session_weight: float,
    ) -> None:
        self.model = model
        self.positions = positions
        self.session_weight = session_weight
        self.snap = snap
        self.user_index = user_index
        n = len(model.items)
        self.n = n
        # live history: summed weights per item (ALS) and position-decayed (session)
        totals: dict[str, float] = {}
        for entry in snap.history:
            totals[entry.item] = totals.get(entry.item, 0.0) + entry.weight
        self.history_items = totals
        session: dict[str, float] = {}
        for position, entry in enumerate(snap.history):
            if entry.item in snap.covisits:  # the window's distinct items
                session[entry.item] = session.get(entry.item, 0.0) + entry.weight * (
                    POSITION_DECAY**position
                )
        self.session = session

    def _known(self, weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        index = self.positions.get
        pairs = [
            (i, w) for i, w in ((index(item), w) for item, w in weights.items()) if i is not None
        ]
        idx = np.fromiter((i for i, _ in pairs), dtype=np.int64, count=len(pairs))
        w = np.fromiter((w for _, w in pairs), dtype=np.float64, count=len(pairs))
        return idx, w

    def als(self) -> np.ndarray | None:
        model, u = self.model, self.user_index
        idx, w = self._known(self.history_items)
        if idx.size == 0:
            if u is None:
                return None
            vector = model.user_factors[u]
        elif u is None:
            vector = model.fold_in(idx, w)
        else:
            start, end = model.seen.indptr[u], model.seen.indptr[u + 1]
            vector = model.fold_in(
                np.concatenate([model.seen.indices[start:end], idx]),
                np.concatenate([model.seen.data[start:end], model.confidence(w)]),
                confidences=True,
            )
        # model.scores without BLAS: a multi-threaded BLAS matrix-vector product on a busy
        # 2-core server took ~40 ms instead of ~0.1 ms (thread hand-offs); einsum stays in
        # this thread whatever the process's BLAS settings
        scores = np.einsum("ij,j->i", model.item_factors, np.asarray(vector, dtype=np.float32))
        return _scaled(scores.astype(np.float64))

    def covisit(self) -> tuple[np.ndarray, dict[str, float]] | None:
        model = self.model
        idx, w = self._known(self.session)
        if not self.session and self.user_index is not None:  # the training items, weight 1
            idx = model.seen_items(self.user_index)
            w = np.ones(idx.size)
        offline = model.covisit_scores(idx, w).astype(np.float64) if idx.size else None
        live = np.zeros(self.n)
        extra: dict[str, float] = {}
        index = self.positions.get
        for source, weight in self.session.items():
            for item, count in self.snap.covisits.get(source, {}).items():
                j = index(item)
                if j is None:
                    extra[item] = extra.get(item, 0.0) + weight * count
                else:
                    live[j] += weight * count
        live_max = max(float(live.max()), max(extra.values(), default=0.0))
        if (offline is None or not offline.any()) and live_max <= 0:
            return None
        total = np.zeros(self.n)
        if offline is not None and offline.max() > 0:
            total += offline / offline.max()
        if live_max > 0:
            total += live / live_max
            extra = {item: v / live_max for item, v in extra.items()}
        top = max(float(total.max()), max(extra.values(), default=0.0))
        return total / top, {item: v / top for item, v in extra.items()}

    def trending(self) -> tuple[np.ndarray, dict[str, float]]:
        dense = np.zeros(self.n)
        extra: dict[str, float] = {}
        if not self.snap.trending:
            return dense, extra
        top = self.snap.trending[0][1]
        index = self.positions.get
        for item, score in self.snap.trending:
            j = index(item)
            if j is None:
                extra[item] = score / top
            else:
                dense[j] = score / top
        return dense, extra

    def popular(self) -> np.ndarray:
        pop = self.model.popularity.astype(np.float64)
        top = float(pop.max())
        return pop / top if top > 0 else pop

    def parts(self, strategy: Strategy) -> list[tuple[str, float, np.ndarray, dict[str, float]]]:
        """``(reason, weight, dense scores, new-item scores)`` of the strategy's mix."""
        none: dict[str, float] = {}
        if strategy == "als":
            als = self.als()
            if als is not None:
                return [("als", 1.0, als, none)]
        elif strategy == "covisit":
            cov = self.covisit()
            if cov is not None:
                return [("covisit", 1.0, *cov), ("popular", POPULAR_PRIOR, self.popular(), none)]
        elif strategy == "blend":
            als, cov = self.als(), self.covisit()
            if als is not None or cov is not None:
                mix: list[tuple[str, float, np.ndarray, dict[str, float]]] = []
                share = self.session_weight if als is not None else 1.0
                if als is not None:
                    mix.append(("als", 1.0 - share if cov is not None else 1.0, als, none))
                if cov is not None:
                    mix.append(("covisit", share, *cov))
                mix.append(("trending", TRENDING_PRIOR, *self.trending()))
                return mix
        trend, trend_new = self.trending()
        if not trend_new and not trend.any():
            return [("popular", 1.0, self.popular(), none)]
        return [
            ("popular", 1.0 - TRENDING_SHARE, self.popular(), none),
            ("trending", TRENDING_SHARE, trend, trend_new),
        ]

    def rank(self, k: int, exclude: Sequence[str], strategy: Strategy) -> list[dict[str, Any]]:
        mix = [part for part in self.parts(strategy) if part[1] > 0]
        model = self.model
        score = np.zeros(self.n)
        new_scores: dict[str, float] = {}
        for _, weight, dense, extra in mix:
            score += weight * dense
            for item, value in extra.items():
                new_scores[item] = new_scores.get(item, 0.0) + weight * value
        blocked = set(self.history_items) | {str(e) for e in exclude}
        idx, _ = self._known(dict.fromkeys(blocked, 0.0))
        score[idx] = -np.inf
        if self.user_index is not None:
            u = self.user_index
            score[model.seen.indices[model.seen.indptr[u] : model.seen.indptr[u + 1]]] = -np.inf
        chosen = _top_indices(score, k)
        # (score, catalogue position: new items after the catalogue, id, index or -1)
        candidates = [(float(score[j]), int(j), str(model.items[j]), int(j)) for j in chosen]
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


def _reason(mix: list[tuple[str, float, np.ndarray, dict[str, float]]], j: int, item: str) -> str:
    """The part that contributed most to one item's score (ties: the first in the mix)."""
    best, best_value = mix[0][0], -1.0
    for reason, weight, dense, extra in mix:
        value = weight * (float(dense[j]) if j >= 0 else extra.get(item, 0.0))
        if value > best_value:
            best, best_value = reason, value
    return best


def _top_indices(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite scores; ties at the cut go to the smaller index."""
    finite = int(np.isfinite(score).sum())
    k = min(k, finite)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k >= score.size:
        return np.flatnonzero(np.isfinite(score))
    part = np.argpartition(-score, k - 1)[:k]
    threshold = score[part].min()
    above = np.flatnonzero(score > threshold)
    ties = np.flatnonzero(score == threshold)[: k - above.size]
    return np.concatenate([above, ties])
