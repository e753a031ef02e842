"""Offline training of the implicit-feedback recommender (ALS, co-visitation, popularity).

The trained :class:`RecommenderModel` is plain arrays; :func:`load_recommender` reads a
registered version back (the server's real-time recommender uses it).

>>> RecommenderModel.example().items.tolist()
['a', 'b', 'c', 'd']
"""

from loopline.train.recommender.model import RecommenderModel, load_recommender

__all__ = ["RecommenderModel", "load_recommender"]
