"""Type conversion and inference (loopline.ingest.coerce)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from loopline.config.contracts import ColumnType
from loopline.ingest.coerce import (
    column_type,
    conversion_failed,
    convert,
    infer_type,
    polars_dtype,
)


def _run(values: list[Any], target: ColumnType, fmt: str | None = None) -> list[tuple[Any, bool]]:
    series = pl.Series("v", values)
    dst = polars_dtype(target)
    value = convert(pl.col("v"), series.dtype, dst, fmt)
    failed = conversion_failed(pl.col("v"), value, series.dtype, dst)
    out = series.to_frame().select(value.alias("value"), failed.alias("failed"))
    assert out.schema["value"] == dst
    return out.rows()


def test_int_strings_parse_with_spaces_and_reject_thousands_separators() -> None:
    assert _run(["  12 ", "-3", "1,234", "1.5", "x", None], "int64") == [
        (12, False),
        (-3, False),
        (None, True),
        (None, True),
        (None, True),
        (None, False),
    ]


def test_int32_overflow_fails() -> None:
    assert _run(["2147483647", "2147483648"], "int32") == [(2147483647, False), (None, True)]


def test_float_strings_parse_and_nan_or_infinity_fail() -> None:
    assert _run([" 1.5", "1e3", "NaN", "inf", "abc"], "float64") == [
        (1.5, False),
        (1000.0, False),
        (None, True),
        (None, True),
        (None, True),
    ]


def test_float32_from_strings() -> None:
    assert _run(["0.5", "x"], "float32") == [(0.5, False), (None, True)]


def test_bool_tokens_in_any_case() -> None:
    rows = _run(["TRUE", "no", "Y", "0", "t", "F", "maybe"], "bool")
    assert rows == [
        (True, False),
        (False, False),
        (True, False),
        (False, False),
        (True, False),
        (False, False),
        (None, True),
    ]


def test_dates_iso_and_custom_format() -> None:
    assert _run(["2024-02-29", "2023-02-29", "x"], "date") == [
        (date(2024, 2, 29), False),
        (None, True),
        (None, True),
    ]
    assert _run(["29/02/2024"], "date", "%d/%m/%Y") == [(date(2024, 2, 29), False)]


def test_datetimes_iso_variants_become_utc_microseconds() -> None:
    rows = _run(
        [
            "2024-01-02T03:04:05Z",
            "2024-01-02 03:04:05+02:00",
            "2024-01-02T03:04:05.123456",
            "2024-01-02T03:04",
            "2024-01-02",
            "yesterday",
        ],
        "datetime",
    )
    assert rows == [
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), False),
        (datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC), False),
        (datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), False),
        (datetime(2024, 1, 2, 3, 4, tzinfo=UTC), False),
        (datetime(2024, 1, 2, tzinfo=UTC), False),
        (None, True),
    ]


def test_datetime_custom_format() -> None:
    assert _run(["02.01.2024 03:04"], "datetime", "%d.%m.%Y %H:%M") == [
        (datetime(2024, 1, 2, 3, 4, tzinfo=UTC), False)
    ]


def test_typed_datetimes_are_converted_to_utc() -> None:
    series = pl.Series("v", [datetime(2024, 1, 2, 12)]).dt.replace_time_zone("Europe/Paris")
    value = convert(pl.col("v"), series.dtype, polars_dtype("datetime"))
    assert series.to_frame().select(value).item() == datetime(2024, 1, 2, 11, tzinfo=UTC)
    naive = pl.Series("v", [datetime(2024, 1, 2, 12)], dtype=pl.Datetime("ns"))
    value = convert(pl.col("v"), naive.dtype, polars_dtype("datetime"))
    out = naive.to_frame().select(value)
    assert out.schema["v"] == pl.Datetime("us", "UTC")
    assert out.item() == datetime(2024, 1, 2, 12, tzinfo=UTC)


def test_decimal_from_strings() -> None:
    assert _run(["12.5", " 3 ", "1,5"], "decimal") == [
        (Decimal("12.5"), False),
        (Decimal("3"), False),
        (None, True),
    ]


def test_non_integral_floats_and_non_bit_ints_fail() -> None:
    assert _run([1.0, 2.5, None], "int64") == [(1, False), (2, True), (None, False)]
    assert _run([0, 1, 7], "bool") == [(False, False), (True, False), (True, True)]


def test_numbers_to_string() -> None:
    assert _run([1, None], "string") == [("1", False), (None, False)]


def test_same_dtype_is_untouched() -> None:
    assert _run(["  keep  "], "string") == [("  keep  ", False)]


def test_column_type_maps_only_exact_dtypes() -> None:
    assert column_type(pl.Datetime("us", "UTC")) == "datetime"
    assert column_type(pl.Datetime("ns")) is None
    assert column_type(pl.Float32()) == "float32"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "2", " 3 "] * 10, "int64"),
        (["1.5", "2", "3.25"] * 10, "float64"),
        (["yes", "No", "TRUE"] * 10, "bool"),
        (["2024-01-02T03:04:05Z", "2024-01-03 00:00:00"] * 10, "datetime"),
        (["2024-01-02", "2024-01-03"] * 10, "date"),
        (["alpha", "12", "2024-01-02"] * 10, "string"),
        ([None, None], "string"),
    ],
)
def test_infer_type_of_string_columns(values: list[str | None], expected: str) -> None:
    assert infer_type(pl.Series(values, dtype=pl.String)) == expected


def test_infer_tolerates_up_to_five_percent_bad_values() -> None:
    good = [str(i) for i in range(96)]
    assert infer_type(pl.Series([*good, "a", "b", "c", "d"])) == "int64"
    assert infer_type(pl.Series([*good[:90], *"abcdefghij"])) == "string"


def test_infer_keeps_typed_columns() -> None:
    assert infer_type(pl.Series([1.5])) == "float64"
    assert infer_type(pl.Series([1], dtype=pl.Int16)) == "string"
