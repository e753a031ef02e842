"""Arrow data every warehouse round-trips: one column of each type loopline stores."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa


def every_type() -> pa.Table:
    """Nulls, extremes, a leap day, time zones, a decimal, a struct with a quote, a list."""
    return pa.table(
        {
            "s": pa.array(["a", "", None]),
            "i64": pa.array([1, -(2**62), None], pa.int64()),
            "i32": pa.array([1, 2**31 - 1, None], pa.int32()),
            "f64": pa.array([0.1, 1e300, None]),
            "b": pa.array([True, False, None]),
            "d": pa.array([date(2024, 2, 29), date(1970, 1, 1), None]),
            "ts_utc": pa.array(
                [datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC), None, None],
                pa.timestamp("us", "UTC"),
            ),
            "ts": pa.array([datetime(2024, 1, 1, 1, 2, 3, 4), None, None], pa.timestamp("us")),
            "dec": pa.array([Decimal("12345.678"), Decimal("-0.001"), None], pa.decimal128(12, 3)),
            "st": pa.array(
                [{"a": 1, "b": "x"}, None, {"a": None, "b": 'q"uote'}],
                pa.struct([("a", pa.int64()), ("b", pa.string())]),
            ),
            "l": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
        }
    )
