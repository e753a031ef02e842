"""Feature role inference and overrides (loopline.train.roles)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from loopline.config.training import FeatureRoles
from loopline.errors import TrainError
from loopline.train.roles import infer_roles

ROWS = 40


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["great", "slow", "support", "price", "network", "billing", "friendly", "outage"]
    reviews = [" ".join(rng.choice(words, size=12)) + f" #{i}" for i in range(ROWS)]
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(ROWS)],
            "row_number": np.arange(ROWS, dtype=np.int64),
            "tenure": rng.integers(0, 72, ROWS),
            "rating": rng.integers(1, 6, ROWS),
            "charges": rng.normal(60, 10, ROWS),
            "plan": rng.choice(["basic", "plus", "pro"], ROWS),
            "paperless": rng.choice([True, False], ROWS),
            "region": pd.Categorical(rng.choice(["n", "s"], ROWS)),
            "signup": pd.date_range("2024-01-01", periods=ROWS, freq="D"),
            "birthday": [dt.date(1990, 1, 1) + dt.timedelta(days=int(d)) for d in range(ROWS)],
            "review": reviews,
            "country": ["NL"] * ROWS,
            "fax": [None] * ROWS,
            "_batch_id": ["b1"] * ROWS,
            "churn": rng.choice(["Yes", "No"], ROWS),
        }
    )


def test_every_column_gets_the_documented_role(frame: pd.DataFrame) -> None:
    roles = infer_roles(frame, target="churn")
    assert roles.numeric == ("tenure", "rating", "charges")
    assert roles.categorical == ("plan", "paperless", "region")
    assert roles.datetime == ("signup", "birthday")
    assert roles.text == ("review",)
    assert roles.dropped == {
        "customer_id": "id-like (a distinct string on every row)",
        "row_number": "id-like (a distinct integer on every row)",
        "country": "constant ('NL' on every non-null row)",
        "fax": "all null",
        "_batch_id": "lineage column",
    }


def test_target_is_not_a_feature(frame: pd.DataFrame) -> None:
    roles = infer_roles(frame, target="churn")
    assert "churn" not in roles.order
    assert "churn" not in roles.features


def test_summary_lists_every_column_in_frame_order(frame: pd.DataFrame) -> None:
    summary = infer_roles(frame, target="churn").summary()
    assert [c for c, _, _ in summary] == [c for c in frame.columns if c != "churn"]
    as_dict = {c: (role, reason) for c, role, reason in summary}
    assert as_dict["tenure"] == ("numeric", "int64")
    assert as_dict["fax"] == ("dropped", "all null")
    assert as_dict["plan"] == ("categorical", "strings (3 distinct)")
    assert as_dict["review"][0] == "text"


def test_features_are_the_kept_columns_in_frame_order(frame: pd.DataFrame) -> None:
    roles = infer_roles(frame, target="churn")
    assert roles.features == (
        "tenure", "rating", "charges", "plan", "paperless", "region", "signup", "birthday",
        "review",
    )  # fmt: skip


def test_low_cardinality_integers_stay_numeric_until_overridden(frame: pd.DataFrame) -> None:
    assert infer_roles(frame, target="churn").role_of("rating") == "numeric"
    roles = infer_roles(frame, target="churn", overrides=FeatureRoles(categorical=["rating"]))
    assert roles.role_of("rating") == "categorical"
    assert roles.reasons["rating"] == "override"


def test_overrides_win_over_id_detection(frame: pd.DataFrame) -> None:
    roles = infer_roles(frame, overrides=FeatureRoles(numeric=["row_number"]))
    assert roles.role_of("row_number") == "numeric"


def test_drop_removes_a_column_with_the_reason(frame: pd.DataFrame) -> None:
    roles = infer_roles(frame, target="churn", drop=["charges"])
    assert roles.dropped["charges"] == "dropped by the job"
    assert "charges" not in roles.numeric


def test_all_null_column_is_dropped_even_when_overridden(frame: pd.DataFrame) -> None:
    roles = infer_roles(frame, overrides=FeatureRoles(numeric=["fax"]))
    assert roles.dropped["fax"] == "all null"


def test_nan_only_float_column_is_all_null() -> None:
    frame = pd.DataFrame({"x": [np.nan] * 5, "y": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert infer_roles(frame).dropped == {"x": "all null"}


def test_short_unique_strings_on_few_rows_stay_categorical() -> None:
    # Three rows: any column is unique; only an id-like name makes it an id.
    frame = pd.DataFrame({"plan": ["a", "b", "c"], "customerID": ["x", "y", "z"]})
    roles = infer_roles(frame)
    assert roles.categorical == ("plan",)
    assert "customerID" in roles.dropped


def test_a_unique_float_column_is_not_an_id() -> None:
    frame = pd.DataFrame({"amount": np.linspace(0, 1, ROWS)})
    assert infer_roles(frame).numeric == ("amount",)


def test_decimals_are_numeric_and_booleans_with_nulls_categorical() -> None:
    frame = pd.DataFrame(
        {
            "amount": pd.Series([Decimal("1.50"), None, Decimal("2.25")] * 3, dtype=object),
            "flag": pd.Series([True, None, False] * 3, dtype=object),
        }
    )
    summary = infer_roles(frame).summary()
    assert summary == [
        ("amount", "numeric", "decimal values"),
        ("flag", "categorical", "booleans with nulls"),
    ]


def test_short_repeated_strings_are_categorical_not_text() -> None:
    long_value = "x" * 80
    frame = pd.DataFrame({"note": [long_value, long_value + "y"] * 20})
    assert infer_roles(frame).categorical == ("note",)


def test_override_naming_an_unknown_column_is_an_error(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainError, match=r"roles\.text names column 'comments'") as info:
        infer_roles(frame, overrides=FeatureRoles(text=["comments"]))
    assert info.value.fields["column"] == "comments"
    assert "tenure" in info.value.message


def test_drop_naming_an_unknown_column_is_an_error(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainError, match="drop names column 'nope'"):
        infer_roles(frame, drop=["nope"])


def test_a_column_with_two_roles_is_an_error(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainError, match="two roles"):
        infer_roles(frame, overrides=FeatureRoles(numeric=["plan"], categorical=["plan"]))


def test_dropping_and_overriding_one_column_is_an_error(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainError, match="both dropped and given a role"):
        infer_roles(frame, overrides=FeatureRoles(numeric=["tenure"]), drop=["tenure"])


def test_naming_the_target_in_roles_is_an_error(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainError, match="target column 'churn'"):
        infer_roles(frame, target="churn", overrides=FeatureRoles(categorical=["churn"]))
