"""Typed parsing of clean CSV columns: which columns are still typed, and when to give up.

:func:`~loopline.ingest.sources.csv.read_csv` asks pyarrow to parse some columns typed
(what a contract declares: float64, timestamp, date) instead of as text. That is only a
shortcut while a column is clean: the first value pyarrow cannot convert, or a float that is
not finite (the text path quarantines those), sends the column back to text, read again from
the start of the file, so raw values still reach the contract's type checks.

>>> typed = TypedColumns({"a": pa.float64(), "b": pa.date32()}, ["", "N/A"])
>>> typed.failed_column("In CSV column #1: CSV conversion error to date32: 'x'", ["a", "b"])
True
>>> sorted(typed.types)
['a']
>>> typed.non_finite(pa.record_batch({"a": [1.0, None, float("inf")]}))
'a'
>>> zoned = TypedColumns({"t": pa.timestamp("us", "UTC")}, [])
>>> zoned.parse_type("t"), zoned.parse_type("other")
(TimestampType(timestamp[us]), DataType(string))
>>> zoned.finish(pa.record_batch({"t": pa.array([0], pa.timestamp("us"))})).schema.field("t").type
TimestampType(timestamp[us, tz=UTC])
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): .*CSV conversion error")


@dataclass
class TypedColumns:
    """The columns still parsed typed, and the null values that apply to them."""

    types: dict[str, pa.DataType]
    null_values: list[str]

    def failed_column(self, message: str, columns: list[str]) -> bool:
        """Drop the column a pyarrow conversion error names (all typed ones if it names
        none we know); ``False`` when ``message`` is not a conversion error of ours."""
        if not self.types or "conversion error" not in message:
            return False
        match = _CONVERSION_ERROR.search(message)
        index = int(match.group(1)) if match else -1
        name = columns[index] if 0 <= index < len(columns) else None
        if name in self.types:
            del self.types[name]
        else:
            self.types.clear()
        return True

    def parse_type(self, column: str) -> pa.DataType:
        """What pyarrow parses ``column`` as: text, or its type (a zoned timestamp is parsed
        without a zone, values taken as UTC, as the text path does)."""
        type_ = self.types.get(column, pa.string())
        if pa.types.is_timestamp(type_) and type_.tz is not None:
            return pa.timestamp(type_.unit)
        return type_

    def finish(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` with its zoned timestamp columns labelled with their zone (no copy)."""
        zoned = [
            i
            for i, name in enumerate(batch.schema.names)
            if name in self.types and self.parse_type(name) != self.types[name]
        ]
        if not zoned:
            return batch
        arrays = list(batch.columns)
        for i in zoned:
            arrays[i] = arrays[i].view(self.types[batch.schema.names[i]])
        return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)

    def non_finite(self, batch: pa.RecordBatch) -> str | None:
        """A typed float column of ``batch`` holding NaN or an infinity (not accepted as a
        measurement: the text path quarantines it), else ``None``."""
        for name, type_ in self.types.items():
            if pa.types.is_floating(type_) and _has_non_finite(batch.column(name)):
                return name
        return None


def _has_non_finite(column: pa.Array) -> bool:
    """Whether a non-null value of the float ``column`` is NaN or infinite.

    Read off its buffers with numpy (pyarrow.compute costs ~25 ms to import, and this is
    all the CSV path needed it for).

    >>> nan_under_null = pa.Array.from_buffers(
    ...     pa.float64(), 2, [pa.py_buffer(b"\\x02"), pa.py_buffer(np.array([np.nan, 1.0]))])
    >>> _has_non_finite(nan_under_null), _has_non_finite(pa.array([1.0, None, -np.inf]))
    (False, True)
    """
    if len(column) == column.null_count:
        return False
    width = column.type.bit_width
    validity, data = column.buffers()[:2]
    values = np.frombuffer(
        data, dtype=_FLOATS[width], count=len(column), offset=column.offset * width // 8
    )
    bad = ~np.isfinite(values)
    if column.null_count and bad.any():  # a null's slot may hold anything: skip nulls
        bits = np.frombuffer(validity, dtype=np.uint8)
        valid = np.unpackbits(bits, count=column.offset + len(column), bitorder="little")
        bad &= valid[column.offset :].astype(bool)
    return bool(bad.any())


_FLOATS = {16: np.float16, 32: np.float32, 64: np.float64}


class RetypeColumn(Exception):
    """Raised inside the reader when a typed column must be read again as text."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column
