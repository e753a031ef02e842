"""Fixtures of the recommender tests: a small synthetic model (no training)."""

from __future__ import annotations

import pytest
from tests.serve.recommend.recommender_project import synthetic_model

from loopline.train.recommender import RecommenderModel


@pytest.fixture
def model() -> RecommenderModel:
    return synthetic_model()
