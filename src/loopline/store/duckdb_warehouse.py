"""The embedded warehouse: one DuckDB file (or ``:memory:``), written from Arrow directly.

Batches are registered as Arrow views and inserted with ``INSERT ... SELECT``, so no row
passes through Python. Arrow types map to DuckDB's native ones (structs and lists stay
nested); timestamps are read back in UTC.

A DuckDB file is held by one process at a time: a second process that opens it gets a
:class:`StoreError` until the first closes it (connections inside one process share it).
Queries run on one thread by default (``threads=1``), the machine's cores being shared.

>>> wh = DuckDBWarehouse(":memory:")
>>> wh.commit_batch(table="t", data=pa.table({"id": [1]}), mode="append", key=[],
...                 quarantine=None, job="j", batch_id="b1", state=None)
1
>>> wh.tables()
['t']
>>> wh.close()
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from loopline.errors import StoreError
from loopline.store.destination import STATE_TABLE
from loopline.store.sql_names import quote_ident
from loopline.store.warehouse import INCOMING, TYPE_CONFLICT_HINT, SqlWarehouse

_PROBE = "_ll_probe"
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DuckDBWarehouse(SqlWarehouse):
    """Warehouse tables in the DuckDB database at ``path`` (parent folders are created)."""

    _db_errors = (duckdb.Error,)
    accepts_string_views = True
    """Batches may hold Arrow string views (Polars' own strings, handed over without a copy)."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        memory = str(path) == ":memory:"
        super().__init__("duckdb:///" + str(path))
        try:
            if not memory:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(path))
            self._con.execute(f"SET threads = {int(threads)}")
            self._con.execute("SET TimeZone = 'UTC'")
        except (duckdb.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the DuckDB warehouse: {exc}",
                url=self.url,
                hint="a DuckDB file is held by one process at a time: close the other "
                "loopline process, or check the folder is writable",
            ) from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._con.begin()
        try:
            yield
        except BaseException:
            self._con.rollback()
            raise
        try:
            self._con.commit()
        except duckdb.Error:
            self._rollback_quietly()
            raise

    def _rollback_quietly(self) -> None:
        with suppress(duckdb.TransactionException):  # the failed commit may have ended it
            self._con.rollback()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._con.execute(sql, list(params))

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        relation = self._con.sql(sql, params=list(params) or None)
        if relation is None:
            return pa.table({})
        table: pa.Table = relation.to_arrow_table()
        return table

    def _columns(self, table: str) -> list[str] | None:
        # duckdb_columns() answers what the information_schema view does (tables and views
        # of the current schema) at a quarter of its cost: this runs for every commit.
        rows = self._con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = current_schema() AND table_name = $1 ORDER BY column_index",
            [table],
        ).fetchall()
        return [str(row[0]) for row in rows] or None

    def _upsert_state(self, job: str, state: str, batch_id: str) -> None:
        # An UPDATE by key costs DuckDB half what INSERT ... ON CONFLICT does (every commit
        # of a stream runs this); a job's first state still goes through the upsert.
        if self._known_columns(STATE_TABLE) is not None:
            changed = self._con.execute(
                f"UPDATE {quote_ident(STATE_TABLE)} SET state = $2, batch_id = $3, "
                "updated_at = $4 WHERE job = $1",
                [job, state, batch_id, datetime.now(UTC)],
            ).fetchone()
            if changed is not None and changed[0]:
                return
        super()._upsert_state(job, state, batch_id)

    def _insert_whole(self, table: str, data: pa.Table, columns: list[str] | None) -> bool:
        # Registering a view costs more than the insert of a micro-batch: a batch with the
        # table's columns in its order goes in directly.
        if columns != data.column_names or not _PLAIN_NAME.fullmatch(table):
            return False
        self._con.from_arrow(data).insert_into(table)
        return True

    def _merge_incoming(self, target: str, columns: Sequence[str], key: Sequence[str]) -> None:
        # One MERGE costs DuckDB about half of DELETE ... USING plus INSERT (a stream merges
        # its anomalies and windows every micro-batch). Stored columns the batch lacks are
        # set to NULL, as the delete-then-insert would leave them.
        table = self._known.get(target) or list(columns)
        q_target = quote_ident(target)
        given = set(columns)
        match = " AND ".join(f"{q_target}.{quote_ident(k)} = s.{quote_ident(k)}" for k in key)
        assign = ", ".join(
            f"{quote_ident(c)} = " + (f"s.{quote_ident(c)}" if c in given else "NULL")
            for c in table
            if c not in key
        )
        names = ", ".join(quote_ident(c) for c in columns)
        values = ", ".join(f"s.{quote_ident(c)}" for c in columns)
        update = f"WHEN MATCHED THEN UPDATE SET {assign} " if assign else ""
        self._con.execute(
            f"MERGE INTO {q_target} USING {INCOMING} AS s ON ({match}) {update}"
            f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
        )

    def _sql_types(self, schema: pa.Schema) -> list[str]:
        if len(schema) == 0:
            return []
        self._con.register(_PROBE, schema.empty_table())
        try:
            described = self._con.execute(f"DESCRIBE SELECT * FROM {_PROBE}").fetchall()
        finally:
            self._con.unregister(_PROBE)
        return [str(row[1]) for row in described]

    def _load_incoming(self, data: pa.Table) -> None:
        self._con.register(INCOMING, data)

    def _drop_incoming(self) -> None:
        self._con.unregister(INCOMING)

    def _hint(self, exc: Exception) -> str:
        if isinstance(exc, duckdb.ConversionException | duckdb.BinderException):
            return TYPE_CONFLICT_HINT
        if isinstance(exc, duckdb.IOException | duckdb.OutOfMemoryException):
            return "free disk space or memory where the DuckDB file lives, then re-run"
        if isinstance(exc, duckdb.ConnectionException):
            return "the warehouse was closed; open it again"
        return "see the DuckDB message above"

    def close(self) -> None:
        """Release the file (another process may open it afterwards)."""
        self._con.close()
