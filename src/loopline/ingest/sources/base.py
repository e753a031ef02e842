"""The one small interface every source offers.

A source reads bounded chunks of Arrow data. Each chunk says where it came from
(``origin``), a deterministic ``position`` (the same input read again gives the same
position, so batch ids are stable across re-runs) and the source ``state`` to store once the
chunk is durable (``None``: unchanged). State is a JSON-able dict owned by the source:
seen files, a cursor's high-water mark, the next page. ``rejects`` holds the rows the source
could not parse (``REJECTS_SCHEMA``: line, raw text, reason); the pipeline quarantines them.

>>> import pyarrow as pa
>>> Chunk(pa.table({"a": [1]}), origin="file:a.csv", position="sha:0", state=None).num_rows
1
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

REJECTS_SCHEMA = pa.schema([("line", pa.int64()), ("raw", pa.string()), ("reason", pa.string())])
"""Rows a source could not parse: 1-based line in the file (null: unknown), raw text, why."""

MAX_RAW_CHARS = 10_000
"""A rejected row's raw text is cut to this many characters."""

FORMAT_KEY = b"format"
"""Schema metadata key of a rejects table naming the format that failed (``csv``, ``json``)."""


@dataclass(frozen=True)
class Chunk:
    """One bounded piece of a source's data."""

    data: pa.Table
    origin: str
    position: str
    state: dict[str, Any] | None
    rejects: pa.Table | None = None
    """Rows that could not be parsed (``REJECTS_SCHEMA``), or ``None``: there were none."""

    @property
    def num_rows(self) -> int:
        return int(self.data.num_rows)

    @property
    def num_rejects(self) -> int:
        return 0 if self.rejects is None else int(self.rejects.num_rows)


@runtime_checkable
class Source(Protocol):
    """Reads chunks, resuming from ``state`` (what an earlier run stored, or ``None``)."""

    name: str

    def read(self, state: Mapping[str, Any] | None) -> Iterator[Chunk]:
        """Yield chunks of at most the configured size; never the whole input at once."""
        ...


@runtime_checkable
class PrefersTypes(Protocol):
    """A source that can parse some columns typed while they parse cleanly (CSV files)."""

    def prefer_types(self, types: Mapping[str, pa.DataType], null_values: Sequence[str]) -> None:
        """Parse ``types``' columns typed, ``null_values`` as nulls there; a column with a
        value that does not parse stays text, as if this had not been asked."""
        ...
