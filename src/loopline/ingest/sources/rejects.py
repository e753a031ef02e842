"""Rows a reader could not parse, kept until the file source puts them on a chunk.

A reader adds each bad row (its line, raw text and why it failed) to a :class:`RejectLog`;
the file source takes what has gathered each time it cuts a chunk, so every reject travels
on exactly one chunk. :class:`MostlyInvalidCheck` stops a file whose rows mostly fail
(a wrong delimiter or layout) instead of quarantining all of it.

>>> log = RejectLog("csv")
>>> log.add(3, "1,2,3", "expected 2 fields, got 3")
>>> log.take().to_pylist()
[{'line': 3, 'raw': '1,2,3', 'reason': 'expected 2 fields, got 3'}]
>>> log.take() is None
True
"""

from __future__ import annotations

import pyarrow as pa

from loopline.errors import SourceError
from loopline.ingest.sources.base import FORMAT_KEY, MAX_RAW_CHARS, REJECTS_SCHEMA

JUDGED_ROWS = 1000
"""The mostly-invalid check looks at (at least) this many first rows of a file."""

MIN_JUDGED_ROWS = 20
"""Files with fewer rows are never judged: a few bad rows are quarantined whatever the ratio."""


class RejectLog:
    """Rejected rows of one file, in file order, until :meth:`take` hands them on."""

    def __init__(self, fmt: str) -> None:
        self.schema = REJECTS_SCHEMA.with_metadata({FORMAT_KEY: fmt.encode()})
        self.total = 0
        self._lines: list[int | None] = []
        self._raw: list[str] = []
        self._reasons: list[str] = []

    def add(self, line: int | None, raw: str, reason: str) -> None:
        self._lines.append(line)
        self._raw.append(raw[:MAX_RAW_CHARS])
        self._reasons.append(reason)
        self.total += 1

    def take(self) -> pa.Table | None:
        """The rejects added since the last call (``None``: none), as a ``REJECTS_SCHEMA`` table."""
        if not self._lines:
            return None
        table = pa.table([self._lines, self._raw, self._reasons], schema=self.schema)
        self._lines, self._raw, self._reasons = [], [], []
        return table


def concat_rejects(*tables: pa.Table | None) -> pa.Table | None:
    """The given rejects tables one after the other; ``None`` when there are none.

    >>> log = RejectLog("json")
    >>> log.add(1, "x", "bad")
    >>> concat_rejects(None, log.take(), None).num_rows
    1
    """
    present = [t for t in tables if t is not None and t.num_rows]
    if not present:
        return None
    return present[0] if len(present) == 1 else pa.concat_tables(present)


class MostlyInvalidCheck:
    """Raises when more than half of a file's first rows are rejects (the dialect is wrong).

    Call :meth:`update` with running totals as rows are read; the verdict is given once
    :data:`JUDGED_ROWS` rows are seen, or at the end of the file (``final=True``).

    >>> check = MostlyInvalidCheck("the delimiter is wrong", path="a.csv", hint="set it")
    >>> check.update(valid=990, rejected=10)
    >>> check.update(valid=0, rejected=5000)  # already judged: no longer checked
    """

    def __init__(self, what: str, *, path: str, hint: str) -> None:
        self._what = what
        self._path = path
        self._hint = hint
        self._judged = False

    def update(self, *, valid: int, rejected: int, final: bool = False) -> None:
        seen = valid + rejected
        if self._judged or (seen < JUDGED_ROWS and not final):
            return
        self._judged = True
        if seen >= MIN_JUDGED_ROWS and 2 * rejected > seen:
            raise SourceError(
                f"{rejected} of the first {seen} rows cannot be parsed: {self._what}",
                path=self._path,
                rejected=rejected,
                rows=seen,
                hint=self._hint,
            )
