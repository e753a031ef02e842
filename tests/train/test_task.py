"""Task inference, target checks and target encoding (loopline.train.task)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loopline.config.training import Task
from loopline.errors import TrainError
from loopline.train.task import check_target, encode_target, infer_task


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        (["No", "Yes", "No", None], None, "binary"),
        ([0, 1, 1, 0], "int64", "binary"),
        ([True, False, True], "bool", "binary"),
        ([2.5, 7.0, 2.5], "float64", "binary"),
        (["a", "b", "c", "a"], None, "multiclass"),
        (["a", "b", "c"], "category", "multiclass"),
        ([1, 2, 3, 4, 5, 3], "int64", "multiclass"),
        (list(range(20)), "int64", "multiclass"),
        (list(range(21)), "int64", "regression"),
        ([1.0, 2.0, 3.0], "float64", "regression"),
        ([0.1 * i for i in range(50)], "float64", "regression"),
    ],
)
def test_infer_task_follows_the_documented_rules(
    values: list[Any], dtype: str | None, expected: Task
) -> None:
    assert infer_task(pd.Series(values, dtype=dtype, name="y")) == expected


def test_infer_task_rejects_a_target_without_two_values() -> None:
    with pytest.raises(TrainError, match="1 distinct") as info:
        infer_task(pd.Series([3, 3, None], name="label"))
    assert info.value.fields["column"] == "label"


def test_unknown_target_lists_the_columns_and_suggests_the_closest() -> None:
    frame = pd.DataFrame({"Churn": ["Yes", "No"], "tenure": [1, 2]})
    with pytest.raises(TrainError) as info:
        check_target(frame, "churn", "binary")
    assert "Churn, tenure" in info.value.message
    assert info.value.fields["column"] == "churn"
    assert info.value.hint == "did you mean 'Churn'?"


def test_all_null_target_is_an_error() -> None:
    frame = pd.DataFrame({"y": [None, None, None], "x": [1, 2, 3]})
    with pytest.raises(TrainError, match="null on every row") as info:
        check_target(frame, "y", "binary")
    assert info.value.fields["rows"] == 3


def test_constant_regression_target_is_an_error() -> None:
    frame = pd.DataFrame({"price": [5.0, 5.0, None, 5.0]})
    with pytest.raises(TrainError, match="constant"):
        check_target(frame, "price", "regression")


def test_single_class_is_an_error_naming_the_class() -> None:
    frame = pd.DataFrame({"churn": ["No"] * 10})
    with pytest.raises(TrainError, match="single class \\('No'\\)"):
        check_target(frame, "churn", "binary")


def test_a_class_with_one_row_is_named() -> None:
    frame = pd.DataFrame({"kind": ["a"] * 5 + ["b"] * 5 + ["rare"]})
    with pytest.raises(TrainError, match="'rare' \\(1 row\\)") as info:
        check_target(frame, "kind", "multiclass")
    assert info.value.hint is not None


def test_binary_task_with_three_classes_is_an_error() -> None:
    frame = pd.DataFrame({"kind": ["a", "b", "c"] * 3})
    with pytest.raises(TrainError, match="got 3"):
        check_target(frame, "kind", "binary")


def test_regression_on_strings_is_an_error() -> None:
    frame = pd.DataFrame({"kind": ["a", "b", "c"] * 3})
    with pytest.raises(TrainError, match="must be numeric"):
        check_target(frame, "kind", "regression")


def test_infinite_regression_target_is_an_error() -> None:
    frame = pd.DataFrame({"price": [1.0, np.inf, 3.0]})
    with pytest.raises(TrainError, match="1 infinite"):
        check_target(frame, "price", "regression")


def test_null_targets_are_masked_out_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    frame = pd.DataFrame({"churn": ["Yes", None, "No", "No", None, "Yes"]})
    with caplog.at_level(logging.WARNING, logger="loopline.train.task"):
        keep = check_target(frame, "churn", "binary")
    assert keep.tolist() == [True, False, True, True, False, True]
    assert "left out 2 row(s)" in caplog.text


def test_null_targets_do_not_count_towards_classes() -> None:
    # Two nulls and one 'b' row: the nulls are masked, 'b' alone still cannot be stratified.
    frame = pd.DataFrame({"y": ["a", "a", "b", None, None]})
    with pytest.raises(TrainError, match="'b' \\(1 row\\)"):
        check_target(frame, "y", "binary")


@pytest.mark.parametrize(
    ("values", "classes"),
    [
        (["No", "Yes", "No", "No"], ["No", "Yes"]),
        (["yes", "no", "yes", "yes"], ["no", "yes"]),  # positive even when it is the majority
        (["good", "bad", "good", "good"], ["good", "bad"]),  # minority
        ([1, 0, 1, 1], [0, 1]),
        ([True, False, True], [False, True]),
        ([1.0, 0.0, 0.0], [0.0, 1.0]),
        ([1, 2, 2, 2], [2, 1]),  # {1, 2} is not a 0/1 flag: the minority is positive
        (["a", "b", "a", "b"], ["a", "b"]),  # a tie: the later in sorted order
    ],
)
def test_binary_positive_class_rule(values: list[Any], classes: list[Any]) -> None:
    y = pd.Series(values)
    encoded, got = encode_target(y, "binary")
    assert got == classes
    assert encoded.dtype == np.int64
    assert encoded.tolist() == [got.index(v) for v in values]


def test_multiclass_codes_follow_sorted_labels() -> None:
    encoded, classes = encode_target(pd.Series(["b", "c", "a", "c"]), "multiclass")
    assert classes == ["a", "b", "c"]
    assert encoded.tolist() == [1, 2, 0, 2]


def test_classes_are_plain_python_values() -> None:
    _, classes = encode_target(pd.Series(np.array([3, 1, 2, 3], dtype=np.int32)), "multiclass")
    assert classes == [1, 2, 3]
    assert all(type(c) is int for c in classes)


def test_regression_target_becomes_float64() -> None:
    encoded, classes = encode_target(pd.Series([1, 5, 3]), "regression")
    assert encoded.dtype == np.float64
    assert encoded.tolist() == [1.0, 5.0, 3.0]
    assert classes == []


def test_encode_target_refuses_nulls() -> None:
    with pytest.raises(TrainError, match="1 null"):
        encode_target(pd.Series(["a", None, "b"], name="y"), "binary")
