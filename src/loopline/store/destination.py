"""The one interface every destination offers (warehouse tables, the lake).

A destination commits a batch — its rows, its quarantine rows and the job's new source
state — as one unit: after a crash either all of it is there or none of it is, and
committing the same ``batch_id`` again replaces that batch instead of duplicating it.
The source state therefore lives beside the data it describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import pyarrow as pa

WriteMode = Literal["append", "merge", "replace"]
QUARANTINE_TABLE = "_loopline_quarantine"
STATE_TABLE = "_loopline_state"


class Destination(Protocol):
    """Where ingested batches land."""

    def table_schema(self, table: str) -> pa.Schema | None:
        """The stored schema of ``table`` (lineage columns included), or ``None`` if absent."""
        ...

    def read_state(self, job: str) -> dict[str, Any] | None:
        """The source state committed with ``job``'s last batch, or ``None``."""
        ...

    def commit_batch(
        self,
        *,
        table: str,
        data: pa.Table,
        mode: WriteMode,
        key: Sequence[str],
        quarantine: pa.Table | None,
        job: str,
        batch_id: str,
        state: dict[str, Any] | None,
    ) -> int:
        """Write one batch atomically and idempotently; returns the rows written.

        New columns in ``data`` are added to the table. In ``replace`` mode rows go to a
        staging table and ``state`` is held until :meth:`finish_replace`.
        """
        ...

    def finish_replace(self, *, table: str, job: str) -> None:
        """Swap the staged table in (replace mode) and commit the held state, atomically."""
        ...

    def read_table(self, table: str) -> pa.Table:
        """The whole table (for tests, reports and small tables)."""
        ...

    def close(self) -> None: ...
