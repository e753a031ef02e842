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

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loopline.config.serving import RecommenderServeConfig, Strategy
from loopline.errors import ServeError
from loopline.serve.recommend.ranking import Catalogue, Ranking
from loopline.serve.recommend.state import MemoryState, RecommenderState, Snapshot
from loopline.train.recommender.model import (
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
WINDOW = DEFAULT_RECENT_ITEMS
"""Recent distinct items that make the session (and pair up in live co-visitation)."""


class OnlineRecommender:
    """Recommendations from an offline :class:`RecommenderModel` plus live state.

    The sync methods block on the state; :meth:`arecommend` / :meth:`arecord` await it
    (Redis through its asyncio client), so an event loop serves them without threads.
    What depends only on the model version, the user and its live history (ALS scores,
    fold-in vectors, offline co-visitation) is cached per version (``ranking.CACHE_BYTES``), so
    a user asking again with an unchanged history costs less; answers are the same.
    """

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
        self._served = Catalogue(model)
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
        return self._served.model

    @property
    def version(self) -> str | None:
        """The registered version served (None: a model given directly)."""
        return self._version.version if self._version is not None else None

    @property
    def event_types(self) -> list[str]:
        return sorted(self.config.event_weights)

    def swap(self, info: VersionInfo, model: RecommenderModel) -> None:
        """Serve ``model`` from now on (requests in flight finish on the old one). The live
        state is kept: it is keyed by item ids, which the new version shares."""
        served = Catalogue(model)
        with self._swap_lock:
            self._served, self._version = served, info

    def refresh(self) -> bool:
        """Look at the alias now (instead of at the next poll); True if a new version was
        swapped in. False as well when the alias is not followed."""
        return self._watcher.check_now() if self._watcher is not None else False

    def record(self, user: str, item: str, event_type: str, timestamp: datetime | None) -> None:
        """Apply one event to the live state (history, co-visitation, trending) now.
        ``timestamp`` None: now; a naive one is taken as UTC."""
        weight, seconds = self._event(event_type, timestamp)
        self.state.record(str(user), str(item), weight, seconds)

    async def arecord(
        self, user: str, item: str, event_type: str, timestamp: datetime | None
    ) -> None:
        """:meth:`record` for an event loop: awaits the state instead of blocking on it."""
        weight, seconds = self._event(event_type, timestamp)
        await self.state.arecord(str(user), str(item), weight, seconds)

    def _event(self, event_type: str, timestamp: datetime | None) -> tuple[float, float]:
        """The event's weight and time (seconds since the epoch)."""
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
        return float(weight), seconds

    def recommend(
        self,
        user: str,
        k: int,
        *,
        exclude: Sequence[str] = (),
        strategy: Strategy = "blend",
    ) -> list[dict[str, Any]]:
        """At most ``k`` items for ``user``, best first: ``{"item", "score", "reason"}``."""
        if not _valid(k, strategy):
            return []
        served = self._served  # one version for the request, whatever swaps meanwhile
        snap = self.state.snapshot(str(user), trending=max(100, k + 50))
        return self._rank(served, str(user), snap, k, exclude, strategy)

    async def arecommend(
        self,
        user: str,
        k: int,
        *,
        exclude: Sequence[str] = (),
        strategy: Strategy = "blend",
    ) -> list[dict[str, Any]]:
        """:meth:`recommend` for an event loop: awaits the state instead of blocking on it."""
        if not _valid(k, strategy):
            return []
        served = self._served
        snap = await self.state.asnapshot(str(user), trending=max(100, k + 50))
        return self._rank(served, str(user), snap, k, exclude, strategy)

    def _rank(
        self,
        served: Catalogue,
        user: str,
        snap: Snapshot,
        k: int,
        exclude: Sequence[str],
        strategy: Strategy,
    ) -> list[dict[str, Any]]:
        ranking = Ranking(served, snap, served.model.user_index(user), self.config.session_weight)
        return ranking.rank(k, exclude, strategy)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        self.state.close()

    async def aclose(self) -> None:
        """:meth:`close` from the event loop that used the async methods (closes the
        state's async connections in it)."""
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.close)  # joins its thread
        await self.state.aclose()
        self.state.close()


def _valid(k: int, strategy: Strategy) -> bool:
    """False when there is nothing to rank (``k <= 0``); an unknown strategy is an error."""
    if strategy not in STRATEGIES:
        raise ServeError(f"unknown strategy {strategy!r}", hint=f"use one of {STRATEGIES}")
    return k > 0


def _neighbours(model: RecommenderModel) -> int:
    return max(50, int(model.neighbours.shape[1]))
