"""Line accounting for malformed CSV rows: line breaks inside values, per row."""

from __future__ import annotations

import pyarrow as pa

from loopline.ingest.sources.csv_invalid_rows import line_breaks


def test_line_breaks_are_summed_per_row_over_the_string_columns() -> None:
    batch = pa.record_batch({"a": ["x", "y\nz", "w"], "n": [1, 2, 3], "b": ["p", "q", "r\r\ns\nt"]})
    assert line_breaks(batch).tolist() == [0, 1, 2]


def test_a_batch_without_line_breaks_counts_zero_for_every_row() -> None:
    batch = pa.record_batch({"a": ['"quoted"', ""], "b": ["x\ry", "z"]})  # a lone CR is no line
    assert line_breaks(batch).tolist() == [0, 0]


def test_a_line_break_outside_a_sliced_batch_is_not_counted() -> None:
    # The slice shares its parent's character buffer, which holds the line break.
    batch = pa.record_batch({"a": ["x\ny", "z", "w\n"], "b": ["1", "2", "3"]}).slice(1, 1)
    assert line_breaks(batch).tolist() == [0]


def test_large_string_columns_are_counted_too() -> None:
    batch = pa.record_batch({"a": pa.array(["a\nb\nc", "d"], type=pa.large_string())})
    assert line_breaks(batch).tolist() == [2, 0]
