"""The real-time recommender of ``loopline serve``: live state plus the offline model.

:class:`OnlineRecommender` blends a registered :class:`~loopline.train.recommender.RecommenderModel`
with the live signal kept in a :class:`RecommenderState` (in the process, or in Redis for
several replicas).

>>> from loopline.serve.recommend import MemoryState
>>> MemoryState().history_size
50
"""

from loopline.serve.recommend.state import HistoryEntry, MemoryState, RecommenderState, Snapshot

__all__ = ["HistoryEntry", "MemoryState", "RecommenderState", "Snapshot"]
