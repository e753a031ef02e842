"""Query-able warehouse tables (DuckDB or PostgreSQL) behind one :class:`Destination`.

:func:`open_warehouse` picks the engine from the URL; :class:`SqlWarehouse` holds the commit
logic both engines share (create, evolve, delete-then-insert, staging, quarantine, state),
so an engine module only says how to run SQL and how to load Arrow data.

>>> wh = open_warehouse("duckdb:///:memory:", base_dir=Path("."))
>>> wh.commit_batch(table="t", data=pa.table({"a": [1, 2]}), mode="append", key=[],
...                 quarantine=None, job="j", batch_id="b1", state={"offset": 2})
2
>>> wh.read_state("j"), wh.query("SELECT max(a) AS m FROM t WHERE a < $1", [5]).to_pylist()
({'offset': 2}, [{'m': 2}])
>>> wh.close()
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from loopline.errors import LooplineError, SinkError, StoreError, TransientSinkError
from loopline.lineage import BATCH_ID
from loopline.store.destination import (
    QUARANTINE_ARROW_SCHEMA,
    QUARANTINE_TABLE,
    STATE_TABLE,
    Destination,
    TableWrite,
    WriteMode,
    with_batch_id,
)
from loopline.store.sql_names import check_table_name, quote_ident, redact_url, staging_name

INCOMING = "_ll_incoming"
STATE_COLUMNS = ("job", "state", "batch_id", "updated_at")
TYPE_CONFLICT_HINT = (
    "a column of the batch has a type the stored column cannot take; cast it in the "
    "contract, or rename the column so it becomes a new one"
)


class Warehouse(Destination, Protocol):
    """A destination whose tables can also be queried (reports, tests)."""

    url: str

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run ``sql`` (placeholders ``$1``, ``$2`` ... on both engines) and return its rows."""
        ...

    def tables(self) -> list[str]:
        """Names of the tables in the current schema, sorted."""
        ...

    def commit_tables(
        self,
        writes: Sequence[TableWrite],
        *,
        quarantine: pa.Table | None,
        job: str,
        batch_id: str,
        state: dict[str, Any] | None,
        new_batch: bool = False,
    ) -> int:
        """Several tables' rows of one batch, its quarantine rows and state in ONE commit."""
        ...


def open_warehouse(url: str, *, base_dir: Path) -> SqlWarehouse:
    """Open the warehouse at ``url``: ``duckdb:///PATH`` (relative to ``base_dir``),
    ``duckdb:///:memory:`` or ``postgresql://...`` (also ``postgresql+psycopg://``).
    """
    if url.startswith("duckdb:///"):
        from loopline.store.duckdb_warehouse import DuckDBWarehouse

        target = url.removeprefix("duckdb:///")
        if not target:
            raise StoreError(
                "duckdb URL names no file",
                url=url,
                hint="use duckdb:///path/to/file.duckdb or duckdb:///:memory:",
            )
        return DuckDBWarehouse(target if target == ":memory:" else base_dir / target)
    if url.split("://", 1)[0] in ("postgresql", "postgresql+psycopg", "postgres"):
        from loopline.store.postgres_warehouse import PostgresWarehouse

        return PostgresWarehouse(url)
    raise StoreError(
        "unsupported warehouse URL",
        url=redact_url(url),
        hint="use duckdb:///path/to/file.duckdb, duckdb:///:memory: or postgresql://user@host/db",
    )


@dataclass(frozen=True)
class _HeldReplace:
    """What a ``replace`` run has staged: the state to commit at :meth:`finish_replace`."""

    state: str | None
    batch_id: str | None


_FEW_ROWS = 64
"""Up to this many rows, :func:`_last_per_key` checks the keys are unique in Python."""


def _plain_key(dtype: pa.DataType) -> bool:
    """Whether Python compares values of ``dtype`` as SQL does (no NaN, all hashable)."""
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
        or pa.types.is_integer(dtype)
        or pa.types.is_timestamp(dtype)
        or pa.types.is_date(dtype)
        or pa.types.is_boolean(dtype)
    )


def _last_per_key(data: pa.Table, key: Sequence[str], table: str) -> pa.Table:
    """Keep the last row of each key (a merge batch may update a key twice)."""
    missing = [k for k in key if k not in data.column_names]
    if not key or missing:
        raise SinkError(
            "merge needs key columns present in the batch",
            table=table,
            key=list(key),
            missing=missing or None,
            hint="set 'key' to columns the batch has",
        )
    simple = all(_plain_key(data.schema.field(k).type) for k in key)
    if simple and data.num_rows <= _FEW_ROWS:  # a stream's few anomalies: no frame to build
        columns = [data.column(k).to_pylist() for k in key]
        if len(set(zip(*columns, strict=True))) == data.num_rows:
            return data
    keys = pl.DataFrame(data.select(list(key)))
    rows = keys.with_row_index("__row").group_by(list(key)).agg(pl.col("__row").max())["__row"]
    if len(rows) == data.num_rows:
        return data
    return data.take(rows.sort().to_arrow())


class SqlWarehouse(ABC):
    """Shared commit logic; subclasses run SQL with ``$n`` placeholders and load Arrow data.

    Each :meth:`commit_batch` is one transaction; ``replace`` runs are staged per instance,
    so a new instance (after a crash) starts its staging afresh.
    """

    url: str
    _db_errors: tuple[type[Exception], ...] = ()
    _state_type = "VARCHAR"

    def __init__(self, url: str) -> None:
        self.url = url
        self._staged: dict[str, _HeldReplace] = {}
        # Columns of the tables this instance writes (None: no such table), so a commit
        # need not look them up. Another writer may change a table meanwhile: a commit that
        # fails after using them forgets them all and runs once more on fresh lookups.
        self._known: dict[str, list[str] | None] = {}
        self._used_known = False

    # -- engine hooks ---------------------------------------------------------------------
    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """Everything inside commits together or not at all."""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> pa.Table: ...

    @abstractmethod
    def _sql_types(self, schema: pa.Schema) -> list[str]:
        """The engine's column type for each field of ``schema``."""

    @abstractmethod
    def _load_incoming(self, data: pa.Table) -> None:
        """Make ``data`` readable as relation :data:`INCOMING` in the open transaction."""

    @abstractmethod
    def _drop_incoming(self) -> None: ...

    @abstractmethod
    def _hint(self, exc: Exception) -> str: ...

    @abstractmethod
    def close(self) -> None: ...

    def _check_name(self, table: str) -> None:
        check_table_name(table)

    def _created(self, table: str, mode: WriteMode, key: Sequence[str]) -> None:  # noqa: B027
        """Called after ``table`` is created (engines may index the merge key)."""

    # -- reading -----------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run ``sql`` (placeholders ``$1``, ``$2`` ...) and return its rows as Arrow."""
        try:
            return self._fetch(sql, params or ())
        except self._db_errors as exc:
            raise self._read_error(exc, f"query failed: {_first_line(exc)}") from exc

    def tables(self) -> list[str]:
        """Names of the tables in the current schema, sorted."""
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_catalog = current_database() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [str(name) for name in rows.column(0).to_pylist()]

    def _columns(self, table: str) -> list[str] | None:
        rows = self._fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_catalog = current_database() AND table_name = $1 "
            "ORDER BY ordinal_position",
            [table],
        )
        names = [str(name) for name in rows.column(0).to_pylist()]
        return names or None

    def table_schema(self, table: str) -> pa.Schema | None:
        self._check_name(table)
        try:
            if self._columns(table) is None:
                return None
        except self._db_errors as exc:
            raise self._read_error(
                exc, f"cannot read the schema: {_first_line(exc)}", table=table
            ) from exc
        return self.query(f"SELECT * FROM {quote_ident(table)} WHERE 1 = 0").schema

    def read_table(self, table: str) -> pa.Table:
        self._check_name(table)
        return self.query(f"SELECT * FROM {quote_ident(table)}")

    def read_state(self, job: str) -> dict[str, Any] | None:
        try:
            if self._columns(STATE_TABLE) is None:
                return None
        except self._db_errors as exc:
            raise self._read_error(exc, f"cannot read state: {_first_line(exc)}") from exc
        rows = self.query(
            f"SELECT CAST(state AS VARCHAR) AS state FROM {quote_ident(STATE_TABLE)} "
            "WHERE job = $1",
            [job],
        )
        if rows.num_rows == 0:
            return None
        value: dict[str, Any] = json.loads(rows.column(0)[0].as_py())
        return value

    def read_since(
        self, table: str, column: str, since: datetime, columns: Sequence[str] | None = None
    ) -> pa.Table | None:
        """Rows of ``table`` whose ``column`` is ``since`` or later (``columns`` of them that
        exist, or all); ``None`` when the table does not exist (stream recovery)."""
        self._check_name(table)
        try:
            existing = self._columns(table)
        except self._db_errors as exc:
            raise self._read_error(exc, f"cannot read: {_first_line(exc)}", table=table) from exc
        if existing is None:
            return None
        wanted = [c for c in columns if c in existing] if columns is not None else existing
        selected = ", ".join(quote_ident(c) for c in wanted) or "*"
        return self.query(
            f"SELECT {selected} FROM {quote_ident(table)} WHERE {quote_ident(column)} >= $1",
            [since],
        )

    def delete_before(self, table: str, column: str, cutoff: datetime) -> int:
        """Delete the rows of ``table`` whose ``column`` is before ``cutoff`` (retention);
        returns how many went (0 when the table does not exist)."""
        self._check_name(table)
        where = f"FROM {quote_ident(table)} WHERE {quote_ident(column)} < $1"
        try:
            if self._columns(table) is None:
                return 0
            with self._transaction():
                doomed = int(self._fetch(f"SELECT count(*) AS n {where}", [cutoff])[0][0].as_py())
                if doomed:
                    self._execute(f"DELETE {where}", [cutoff])
        except self._db_errors as exc:
            raise self._sink_error(exc, table, "delete old rows from") from exc
        return doomed

    # -- writing -----------------------------------------------------------------------------
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
        """Write one batch, its quarantine rows and its state in one transaction.

        ``new_batch`` skips the delete of earlier rows of ``batch_id`` (a scan of the table's
        ``_batch_id`` column, which grows with the table)."""
        self._check_name(table)
        if mode not in ("append", "merge", "replace"):
            raise SinkError(
                f"unknown write mode {mode!r}", table=table, hint="use append, merge or replace"
            )
        if mode != "replace":
            return self.commit_tables(
                [TableWrite(table, data, mode, tuple(key))],
                quarantine=quarantine,
                job=job,
                batch_id=batch_id,
                state=state,
                new_batch=new_batch,
            )
        target = staging_name(table)
        self._check_name(target)
        data = with_batch_id(data, batch_id)
        rejected = None if quarantine is None else with_batch_id(quarantine, batch_id)
        state_text = _state_json(state, job)
        fresh_stage = table not in self._staged

        def write(where: list[str]) -> None:
            if fresh_stage:  # leftovers of a crashed run must not leak into this one
                self._execute(f"DROP TABLE IF EXISTS {quote_ident(target)}")
                self._known[target] = None
            self._write(target, data, mode, key, None if new_batch else batch_id)
            self._write_quarantine(rejected, None if new_batch else batch_id)

        self._commit_retrying(write, table)
        held = self._staged.get(table)
        if state_text is None and held is not None:
            state_text, batch_id = held.state, held.batch_id or batch_id
        self._staged[table] = _HeldReplace(state_text, batch_id)
        return int(data.num_rows)

    def commit_tables(
        self,
        writes: Sequence[TableWrite],
        *,
        quarantine: pa.Table | None,
        job: str,
        batch_id: str,
        state: dict[str, Any] | None,
        new_batch: bool = False,
    ) -> int:
        """Write one batch's rows for several tables, its quarantine rows and its state in ONE
        transaction: after a crash all of it is stored or none of it is.

        Every row gets ``_batch_id`` = ``batch_id``. An ``append`` part first deletes the
        earlier rows of ``batch_id`` from its table (skipped when ``new_batch``: a fresh id on
        its first attempt), a ``merge`` part replaces the stored rows with its keys, so
        committing the same batch again stores nothing twice. Returns the rows written.

        >>> wh = open_warehouse("duckdb:///:memory:", base_dir=Path("."))
        >>> wh.commit_tables([TableWrite("readings", pa.table({"id": [1, 2]})),
        ...                   TableWrite("alerts", pa.table({"id": [2]}), "merge", ("id",))],
        ...                  quarantine=None, job="j", batch_id="b1", state={"offset": 2})
        3
        >>> wh.read_state("j"), wh.tables()
        ({'offset': 2}, ['_loopline_state', 'alerts', 'readings'])
        >>> wh.close()
        """
        parts: list[TableWrite] = []
        for write in writes:
            self._check_name(write.table)
            if write.mode not in ("append", "merge"):
                raise SinkError(
                    f"write mode {write.mode!r} cannot be part of a multi-table commit",
                    table=write.table,
                    hint="use append or merge (replace stages a whole table: commit_batch)",
                )
            data = with_batch_id(write.data, batch_id)
            if write.mode == "merge":
                data = _last_per_key(data, write.key, write.table)
            parts.append(TableWrite(write.table, data, write.mode, write.key))
        tables = [part.table for part in parts]
        if len(set(tables)) != len(tables):
            raise SinkError(
                "a table appears twice in one commit",
                table=next(t for t in tables if tables.count(t) > 1),
                hint="concatenate the table's rows into one part",
            )
        rejected = None if quarantine is None else with_batch_id(quarantine, batch_id)
        state_text = _state_json(state, job)
        replaces = None if new_batch else batch_id
        first = tables[0] if tables else QUARANTINE_TABLE

        def write_all(where: list[str]) -> None:
            for part in parts:
                where[0] = part.table
                self._write(part.table, part.data, part.mode, part.key, replaces)
            where[0] = first  # quarantine rows and state belong to the batch as a whole
            self._write_quarantine(rejected, replaces)
            if state_text is not None:
                self._upsert_state(job, state_text, batch_id)

        self._commit_retrying(write_all, first)
        return sum(int(part.data.num_rows) for part in parts)

    def _commit_retrying(self, write: Callable[[list[str]], None], table: str) -> None:
        """Run ``write`` in one transaction; once more on fresh column lookups when the
        remembered ones may be stale (see ``__init__``). ``write`` keeps the table an error
        should name in its argument's only item."""
        for attempt in (1, 2):
            self._used_known = False
            where = [table]
            try:
                with self._transaction():
                    write(where)
                return
            except self._db_errors as exc:
                retry = self._used_known and attempt == 1 and not self._transient(exc)
                self._known.clear()
                if not retry:
                    raise self._sink_error(exc, where[0], "write a batch to") from exc

    def finish_replace(self, *, table: str, job: str) -> None:
        """Swap the staged table in and commit the held state; with nothing staged by this
        instance the run wrote no rows, so the target is emptied (its columns kept)."""
        self._check_name(table)
        held = self._staged.get(table)
        target, stage = quote_ident(table), quote_ident(staging_name(table))
        self._forget(table, staging_name(table))
        try:
            with self._transaction():
                if held is not None:
                    self._execute(f"DROP TABLE IF EXISTS {target}")
                    self._execute(f"ALTER TABLE {stage} RENAME TO {target}")
                elif self._columns(table) is not None:
                    self._execute(f"DELETE FROM {target}")
                if held is not None and held.state is not None:
                    self._upsert_state(job, held.state, held.batch_id or "")
        except self._db_errors as exc:
            raise self._sink_error(exc, table, "swap in the staged") from exc
        self._staged.pop(table, None)

    def _write(
        self,
        target: str,
        data: pa.Table,
        mode: WriteMode,
        key: Sequence[str],
        replaces: str | None,
        template: pa.Schema | None = None,
    ) -> None:
        """Create / widen ``target`` and write ``data``; ``replaces``: the batch id whose
        earlier rows an append or replace deletes first (``None``: a new batch)."""
        existing = self._known_columns(target)
        if existing is None:
            fields = list(template or [])
            fields += [f for f in data.schema if f.name not in {t.name for t in fields}]
            self._create(target, pa.schema(fields))
            self._created(target, mode, key)
            self._known[target] = [f.name for f in fields]
        else:
            new = [f for f in data.schema if f.name not in existing]
            for field, sql_type in zip(new, self._sql_types(pa.schema(new)), strict=True):
                self._execute(
                    f"ALTER TABLE {quote_ident(target)} ADD COLUMN {quote_ident(field.name)} "
                    f"{sql_type}"
                )
            if new:
                self._known[target] = [*existing, *(f.name for f in new)]
        q_target = quote_ident(target)
        columns = ", ".join(quote_ident(c) for c in data.column_names)
        if mode != "merge":  # append / replace: a re-committed batch replaces its earlier rows
            if replaces is not None:
                self._execute(
                    f"DELETE FROM {q_target} WHERE {quote_ident(BATCH_ID)} = $1", [replaces]
                )
            if self._insert_whole(target, data, self._known.get(target)):
                return
        # On failure the transaction's rollback discards the incoming relation too; dropping
        # it in a `finally` would fail in the aborted transaction and hide the real error.
        self._load_incoming(data)
        if mode == "merge":
            self._merge_incoming(target, data.column_names, key)
        else:
            self._execute(f"INSERT INTO {q_target} ({columns}) SELECT {columns} FROM {INCOMING}")
        self._drop_incoming()

    def _merge_incoming(self, target: str, columns: Sequence[str], key: Sequence[str]) -> None:
        """Replace the rows of ``target`` whose ``key`` matches a row of :data:`INCOMING` by
        that row, insert the rest (a key column holding NULL never matches, as in SQL)."""
        q_target = quote_ident(target)
        names = ", ".join(quote_ident(c) for c in columns)
        match = " AND ".join(f"{q_target}.{quote_ident(k)} = s.{quote_ident(k)}" for k in key)
        self._execute(f"DELETE FROM {q_target} USING {INCOMING} AS s WHERE {match}")
        self._execute(f"INSERT INTO {q_target} ({names}) SELECT {names} FROM {INCOMING}")

    def _insert_whole(self, table: str, data: pa.Table, columns: list[str] | None) -> bool:
        """Insert ``data`` into ``table`` (whose ``columns`` are known, or ``None``) without
        the incoming relation if the engine can; returns whether it did."""
        return False

    def _known_columns(self, table: str) -> list[str] | None:
        """:meth:`_columns`, remembered for the tables this instance writes (see __init__)."""
        if table in self._known:
            self._used_known = True
            return self._known[table]
        columns = self._known[table] = self._columns(table)
        return columns

    def _forget(self, *tables: str) -> None:
        for table in tables:
            self._known.pop(table, None)

    def _create(self, table: str, schema: pa.Schema) -> None:
        columns = ", ".join(
            f"{quote_ident(f.name)} {t}"
            for f, t in zip(schema, self._sql_types(schema), strict=True)
        )
        self._execute(f"CREATE TABLE {quote_ident(table)} ({columns})")

    def _write_quarantine(self, rows: pa.Table | None, replaces: str | None) -> None:
        if rows is not None:
            self._write(QUARANTINE_TABLE, rows, "append", (), replaces, QUARANTINE_ARROW_SCHEMA)
        elif replaces is not None and self._known_columns(QUARANTINE_TABLE) is not None:
            self._execute(
                f"DELETE FROM {quote_ident(QUARANTINE_TABLE)} WHERE {quote_ident(BATCH_ID)} = $1",
                [replaces],
            )

    def _upsert_state(self, job: str, state: str, batch_id: str) -> None:
        table = quote_ident(STATE_TABLE)
        if self._known_columns(STATE_TABLE) is None:
            self._execute(
                f"CREATE TABLE IF NOT EXISTS {table} (job VARCHAR PRIMARY KEY, state "
                f"{self._state_type}, batch_id VARCHAR, updated_at TIMESTAMP WITH TIME ZONE)"
            )
            self._known[STATE_TABLE] = list(STATE_COLUMNS)
        self._execute(
            f"INSERT INTO {table} (job, state, batch_id, updated_at) "
            f"VALUES ($1, CAST($2 AS {self._state_type}), $3, $4) ON CONFLICT (job) DO UPDATE "
            "SET state = excluded.state, batch_id = excluded.batch_id, "
            "updated_at = excluded.updated_at",
            [job, state, batch_id, datetime.now(UTC)],
        )

    def _transient(self, exc: Exception) -> bool:
        """Whether ``exc`` lost the connection (the transaction is void: retry on a new one)."""
        return False

    def _read_error(self, exc: Exception, message: str, **fields: Any) -> LooplineError:
        """A lost connection is worth a retry on a new one; anything else is a StoreError."""
        kind = TransientSinkError if self._transient(exc) else StoreError
        return kind(message, url=self.url, hint=self._hint(exc), **fields)

    def _sink_error(self, exc: Exception, table: str, action: str) -> SinkError:
        kind = TransientSinkError if self._transient(exc) else SinkError
        return kind(
            f"cannot {action} table {table!r}: {_first_line(exc)}",
            table=table,
            url=self.url,
            hint=self._hint(exc),
        )


def _state_json(state: dict[str, Any] | None, job: str) -> str | None:
    if state is None:
        return None
    try:
        return json.dumps(state, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise SinkError(
            "the source state is not JSON-serialisable",
            job=job,
            hint="state may hold only str, int, float, bool, None, lists and dicts",
        ) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
