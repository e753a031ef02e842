"""Collects CSV rows with the wrong number of fields, each at its physical line.

pyarrow calls :class:`InvalidRowHandler` for every row whose field count differs from the
header's and numbers rows by *record*: a quoted value spanning lines counts once. The
handler therefore holds each reject until the valid rows before it have been read, adds the
line breaks inside those rows (counted vectorised per batch with :func:`line_breaks`) and
only then hands it to the :class:`RejectLog` with its line number in the file.

>>> import pyarrow as pa, pyarrow.csv as pa_csv
>>> log = RejectLog("csv")
>>> handler = InvalidRowHandler(log, first_record=2)
>>> data = b'a,b\\n"x\\ny",1\\n2,3,4\\n5,6\\n'
>>> options = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler)
>>> read = pa_csv.ReadOptions(use_threads=False)  # threads leave rows unnumbered
>>> table = pa_csv.read_csv(pa.BufferReader(data), read_options=read, parse_options=options)
>>> handler.advance(line_breaks(table.to_batches()[0])); handler.finish()
>>> log.take().to_pylist()  # line 4: the quoted value took lines 2 and 3
[{'line': 4, 'raw': '2,3,4', 'reason': 'expected 2 fields, got 3'}]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from loopline.ingest.sources.rejects import RejectLog

_LF = ord("\n")


class _Pending(NamedTuple):
    record: int
    text: str
    reason: str


class InvalidRowHandler:
    """pyarrow ``invalid_row_handler``: skips bad rows and logs them with their line.

    ``first_record`` is pyarrow's number of the first data row (rows skipped before it,
    header and leading blank lines, count). Call :meth:`advance` with every batch the
    reader returns, in order, and :meth:`finish` at the end of the file.
    """

    def __init__(self, log: RejectLog, *, first_record: int) -> None:
        self._log = log
        self._pending: list[_Pending] = []
        self._record = first_record - 1
        """pyarrow's number of the last record accounted for (valid or released)."""
        self._extra_lines = 0
        """Line breaks inside the records accounted for: line = record number + this."""
        self._released = 0

    @property
    def rejected(self) -> int:
        """Rejects met so far, released or not."""
        return self._released + len(self._pending)

    def __call__(self, row: Any) -> str:
        reason = f"expected {row.expected_columns} fields, got {row.actual_columns}"
        if row.number is None:  # never with use_threads=False; kept unplaced if it happens
            self._log.add(None, row.text, reason)
            self._released += 1
        elif row.number > self._record:  # a re-read meets released rows again: skip them
            self._pending.append(_Pending(row.number, row.text, reason))
        return "skip"

    def restart(self) -> None:
        """The file is read again from its start: rejects not yet released will come again."""
        self._pending.clear()

    def advance(self, breaks: np.ndarray[Any, Any]) -> None:
        """Account for the next valid rows (line breaks inside each, in order)."""
        cumulative = np.concatenate(([0], np.cumsum(breaks, dtype=np.int64)))
        rows, done = len(breaks), 0
        while self._pending:
            between = self._pending[0].record - self._record - 1
            if between > rows - done:
                break
            self._extra_lines += int(cumulative[done + between] - cumulative[done])
            done += between
            self._release()
        self._extra_lines += int(cumulative[rows] - cumulative[done])
        self._record += rows - done

    def finish(self) -> None:
        """End of the file: every reject still held comes after the last valid row."""
        while self._pending:
            self._release()

    def _release(self) -> None:
        record, text, reason = self._pending.pop(0)
        self._log.add(record + self._extra_lines, text, reason)
        self._extra_lines += text.count("\n")
        self._record = record
        self._released += 1


def line_breaks(batch: pa.RecordBatch) -> np.ndarray[Any, Any]:
    """Line breaks inside each row's values (quoted newlines), summed over the columns.

    >>> line_breaks(pa.record_batch({"a": ["x\\ny", "z"], "b": ["1\\r\\n2\\n3", None]}))
    array([3, 0])
    """
    total = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if not _may_hold_line_break(column):
                continue  # the usual case: a memchr-speed scan instead of a count per value
            # Imported here: most files hold no quoted line break, and pyarrow.compute costs
            # ~25 ms to import.
            import pyarrow.compute as pc

            counts = pc.count_substring(column, "\n")
            if counts.null_count:  # CSV text columns hold no nulls: skip the copy then
                counts = pc.fill_null(counts, 0)
            total += counts.to_numpy(zero_copy_only=False)
    return total


def _may_hold_line_break(column: pa.Array) -> bool:
    """Whether the column's character data holds a ``\\n`` byte (UTF-8: never inside a
    multi-byte character). The whole buffer is scanned, so a sliced array may answer yes
    for a value outside the slice: the exact count then says zero."""
    data = column.buffers()[2]
    return data is not None and bool(np.any(np.frombuffer(data, dtype=np.uint8) == _LF))
