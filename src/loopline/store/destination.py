"""The one interface every destination offers (warehouse tables, the lake).

A destination commits a batch — its rows, its quarantine rows and the job's new source
state — as one unit: after a crash either all of it is there or none of it is, and
committing the same ``batch_id`` again replaces that batch instead of duplicating it.
The source state therefore lives beside the data it describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pyarrow as pa

from loopline.lineage import BATCH_ID, INGESTED_AT, SOURCE

WriteMode = Literal["append", "merge", "replace"]
QUARANTINE_TABLE = "_loopline_quarantine"
STATE_TABLE = "_loopline_state"
QUARANTINE_ARROW_SCHEMA = pa.schema(
    [
        ("_rule", pa.string()),
        ("_column", pa.string()),
        ("_raw_value", pa.string()),
        ("_record", pa.string()),
        (SOURCE, pa.string()),
        (BATCH_ID, pa.string()),
        (INGESTED_AT, pa.timestamp("us", "UTC")),
    ]
)
"""Columns of a quarantine row: the failed rule, column, raw value, whole record, lineage."""


@dataclass(frozen=True, slots=True)
class TableWrite:
    """One table's part of a multi-table commit (:meth:`SqlWarehouse.commit_tables`).

    ``mode`` is ``append`` (a re-commit of the batch id replaces its earlier rows) or
    ``merge`` (rows replace the stored rows with the same ``key``).

    >>> TableWrite("anomalies", pa.table({"id": [1]}), "merge", ("id",)).key
    ('id',)
    """

    table: str
    data: pa.Table
    mode: Literal["append", "merge"] = "append"
    key: tuple[str, ...] = ()


def with_batch_id(data: pa.Table, batch_id: str) -> pa.Table:
    """``data`` whose ``_batch_id`` column is ``batch_id`` on every row (added if absent).

    Destinations stamp it themselves, which is what makes a re-commit replace its batch.
    """
    column = pa.repeat(pa.scalar(batch_id, pa.string()), data.num_rows)
    index = data.schema.get_field_index(BATCH_ID)
    if index >= 0:
        return data.set_column(index, BATCH_ID, column)
    return data.append_column(BATCH_ID, column)


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
        new_batch: bool = False,
    ) -> int:
        """Write one batch atomically and idempotently; returns the rows written.

        New columns in ``data`` are added to the table. In ``replace`` mode rows go to a
        staging table and ``state`` is held until :meth:`finish_replace`. ``new_batch``: the
        caller knows no row of ``batch_id`` was ever committed (a fresh id, first attempt),
        so a destination may skip looking for earlier rows of it to replace.
        """
        ...

    def finish_replace(self, *, table: str, job: str) -> None:
        """Swap the staged table in (replace mode) and commit the held state, atomically."""
        ...

    def read_table(self, table: str) -> pa.Table:
        """The whole table (for tests, reports and small tables)."""
        ...

    def close(self) -> None: ...
