"""The loopline.* model-version tags: the contract between training and scoring."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loopline.errors import EvaluationError
from loopline.evaluate.model_tags import ModelTags
from loopline.registry import VersionInfo


def churn() -> ModelTags:
    return ModelTags(
        target="churned",
        task="binary",
        primary_metric="pr_auc",
        threshold=0.27,
        positive_class="Yes",
        classes=["No", "Yes"],
        holdout_metrics={"pr_auc": 0.66, "roc_auc": 0.85},
        lineage={"table": "churn", "rows": 7043, "batch_ids": ["a1", "b2"]},
    )


def version(tags: dict[str, str]) -> VersionInfo:
    return VersionInfo(
        name="churn",
        version="3",
        run_id=None,
        source="models:/m-1",
        aliases=(),
        tags=tags,
        description="",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_tags_are_text_and_read_back_to_the_same_values() -> None:
    tags = churn().to_tags()
    assert all(isinstance(v, str) for v in tags.values())
    assert tags["loopline.classes"] == '["No", "Yes"]'
    assert ModelTags.from_tags(tags) == churn()
    assert ModelTags.of(version(tags | {"mlflow.other": "x"})) == churn()


def test_an_unset_threshold_is_an_empty_tag() -> None:
    tags = ModelTags("price", "regression", "rmse").to_tags()
    assert tags["loopline.threshold"] == ""
    assert ModelTags.from_tags(tags).threshold is None


def test_a_version_without_the_required_tags_names_them_and_the_version() -> None:
    with pytest.raises(EvaluationError, match="no loopline training tags") as caught:
        ModelTags.of(version({"loopline.target": "churned"}))
    assert "loopline.task" in caught.value.message
    assert caught.value.fields == {"model": "churn", "version": "3"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("loopline.classes", "{not json", r"malformed loopline\.classes"),
        ("loopline.classes", '{"a": 1}', r"malformed loopline\.classes"),
        ("loopline.holdout_metrics", "[0.8]", r"malformed loopline\.holdout_metrics"),
        ("loopline.task", "ranking", "unknown task tag"),
        ("loopline.threshold", "high", "not a number"),
    ],
)
def test_malformed_tags_are_evaluation_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        ModelTags.from_tags(churn().to_tags() | {key: value})
