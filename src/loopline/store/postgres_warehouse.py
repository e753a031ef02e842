"""The server warehouse: PostgreSQL tables, bulk-loaded with ``COPY`` from Arrow.

A batch is written as CSV by Arrow's C++ writer, streamed with ``COPY ... FROM STDIN`` into
a temporary table, then moved into the target with one ``INSERT ... SELECT`` (after the
``DELETE`` that makes a re-commit idempotent), all in the batch's transaction. Structs and
lists are stored as ``jsonb`` and read back as JSON text.

Table names are unqualified, so a ``search_path`` set in the URL
(``?options=-csearch_path%3Dmy_schema``) decides where tables live.

Usage (needs a server)::

    wh = PostgresWarehouse("postgresql://loopline@db:5432/analytics")
    wh.commit_batch(table="orders", data=batch, mode="append", key=[], quarantine=None,
                    job="orders", batch_id="b1", state={"offset": 10})
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from loopline.errors import MissingDependencyError, SinkError, StoreError
from loopline.store.sql_names import check_table_name, quote_ident, redact_url
from loopline.store.warehouse import INCOMING, TYPE_CONFLICT_HINT, SqlWarehouse

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.types.string import TextLoader
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingDependencyError("psycopg", "postgres") from exc

MAX_IDENTIFIER_BYTES = 63
_SCHEME = re.compile(r"^(postgresql\+psycopg|postgresql\+psycopg2|postgres)://")
# type OID -> Arrow type, for reading results back (numeric is handled apart: typmod)
_ARROW_OF_OID: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    114: pa.string(),
    700: pa.float32(),
    701: pa.float64(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", "UTC"),
    2950: pa.string(),
    3802: pa.string(),
}
_NUMERIC_OID = 1700


def pg_type(dtype: pa.DataType) -> str:
    """The PostgreSQL column type for an Arrow type.

    >>> pg_type(pa.timestamp("us", "UTC")), pg_type(pa.decimal128(10, 2))
    ('timestamptz', 'numeric(10,2)')
    """
    types = pa.types
    if types.is_dictionary(dtype):
        return pg_type(dtype.value_type)
    simple = [
        (types.is_boolean, "boolean"),
        (lambda t: t in (pa.int8(), pa.int16(), pa.uint8()), "smallint"),
        (lambda t: t in (pa.int32(), pa.uint16()), "integer"),
        (lambda t: t in (pa.int64(), pa.uint32()), "bigint"),
        (lambda t: t == pa.uint64(), "numeric(20,0)"),
        (lambda t: t in (pa.float16(), pa.float32()), "real"),
        (types.is_float64, "double precision"),
        (
            lambda t: types.is_string(t) or types.is_large_string(t) or types.is_string_view(t),
            "text",
        ),
        (types.is_null, "text"),
        (
            lambda t: (
                types.is_binary(t)
                or types.is_large_binary(t)
                or types.is_fixed_size_binary(t)
                or types.is_binary_view(t)
            ),
            "bytea",
        ),
        (types.is_date, "date"),
        (types.is_time, "time"),
        (types.is_nested, "jsonb"),
    ]
    for test, name in simple:
        if test(dtype):
            return name
    if types.is_timestamp(dtype):
        return "timestamptz" if dtype.tz is not None else "timestamp"
    if types.is_decimal(dtype):
        return f"numeric({dtype.precision},{dtype.scale})"
    raise SinkError(
        f"no PostgreSQL type for Arrow type {dtype}",
        hint="cast the column to a string, number, boolean, date or timestamp in the contract",
    )


def _csv_ready(data: pa.Table) -> pa.Table:
    """``data`` with every column in a form Arrow's CSV writer and ``COPY`` agree on.

    PostgreSQL text cannot hold a NUL character: it is written as the four characters
    ``\\x00`` (a device or a file may well send one; refusing the whole batch would be worse).
    """
    types = pa.types
    columns: list[pa.ChunkedArray] = []
    for column in data.columns:
        dtype = column.type
        if types.is_dictionary(dtype):
            column, dtype = column.cast(dtype.value_type), dtype.value_type
        if types.is_nested(dtype):
            column = _to_json_text(column)
        elif types.is_string_view(dtype) or types.is_null(dtype):
            column = column.cast(pa.large_string())
        elif types.is_float16(dtype):
            column = column.cast(pa.float32())
        elif (
            types.is_binary(dtype)
            or types.is_large_binary(dtype)
            or types.is_binary_view(dtype)
            or types.is_fixed_size_binary(dtype)
        ):
            column = _to_bytea_hex(column)
        if types.is_string(column.type) or types.is_large_string(column.type):
            column = pc.replace_substring(column, "\x00", "\\x00")
        columns.append(column)
    return pa.table(columns, names=data.column_names)


def _to_json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Nested values as JSON text (vectorised in Polars); nulls stay SQL NULL."""
    value = pl.col("v")
    encoded = (
        pl.when(value.is_null())
        .then(None)
        .otherwise(pl.struct(value).struct.json_encode().str.strip_prefix('{"v":'))
        .str.strip_suffix("}")
    )
    frame = pl.DataFrame(pa.table({"v": column}))
    return frame.select(encoded).to_arrow().column(0)


def _to_bytea_hex(column: pa.ChunkedArray) -> pa.ChunkedArray:
    frame = pl.DataFrame(pa.table({"v": column.cast(pa.large_binary())}))
    return frame.select(pl.lit("\\x") + pl.col("v").bin.encode("hex")).to_arrow().column(0)


APPLICATION_NAME = "loopline-warehouse"
"""How the warehouse's connections show in ``pg_stat_activity``."""


class PostgresWarehouse(SqlWarehouse):
    """Warehouse tables in the PostgreSQL database at ``url`` (``postgresql://`` or
    ``postgresql+psycopg://``; the password never appears in messages)."""

    _db_errors = (psycopg.Error,)
    _state_type = "jsonb"

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        super().__init__(redact_url(url))
        conninfo = _SCHEME.sub("postgresql://", url)
        try:
            self._conn = psycopg.connect(
                conninfo,
                autocommit=True,
                cursor_factory=psycopg.RawCursor,
                connect_timeout=connect_timeout,
                application_name=APPLICATION_NAME,
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the PostgreSQL warehouse: {exc}".strip(),
                url=self.url,
                hint="check the server is running and the URL's host, port, user and "
                "database (postgresql://user:password@host:5432/db)",
            ) from exc
        self._conn.execute("SET TIME ZONE 'UTC'")
        for name in ("json", "jsonb", "uuid"):  # read as text, like the Arrow side expects
            self._conn.adapters.register_loader(name, TextLoader)

    def _check_name(self, table: str) -> None:
        check_table_name(table)
        if len(table.encode()) > MAX_IDENTIFIER_BYTES:
            raise StoreError(
                "table name too long for PostgreSQL",
                table=table,
                hint=f"PostgreSQL names hold at most {MAX_IDENTIFIER_BYTES} bytes "
                "(replace mode also needs room for the '_stage_' prefix)",
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql, list(params))  # type: ignore[arg-type]

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        with self._conn.cursor() as cursor:
            cursor.execute(sql, list(params))  # type: ignore[arg-type]
            if cursor.description is None:
                return pa.table({})
            rows = cursor.fetchall()
            columns = list(zip(*rows, strict=True)) or [() for _ in cursor.description]
            arrays = [
                _to_arrow(list(values), column.type_code, column.precision, column.scale)
                for values, column in zip(columns, cursor.description, strict=True)
            ]
            return pa.table(arrays, names=[column.name for column in cursor.description])

    def _sql_types(self, schema: pa.Schema) -> list[str]:
        return [pg_type(field.type) for field in schema]

    def _created(self, table: str, mode: str, key: Sequence[str]) -> None:
        if mode == "merge":  # the merge's DELETE finds its rows by index, and keys stay unique
            columns = ", ".join(quote_ident(k) for k in key)
            index = quote_ident(f"_ux_{table}"[:MAX_IDENTIFIER_BYTES])
            self._execute(f"CREATE UNIQUE INDEX {index} ON {quote_ident(table)} ({columns})")

    def _load_incoming(self, data: pa.Table) -> None:
        columns = ", ".join(f"{quote_ident(f.name)} {pg_type(f.type)}" for f in data.schema)
        self._execute(f"CREATE TEMPORARY TABLE {INCOMING} ({columns}) ON COMMIT DROP")
        buffer = io.BytesIO()
        pa_csv.write_csv(_csv_ready(data), buffer, pa_csv.WriteOptions(include_header=False))
        with (
            self._conn.cursor() as cursor,
            cursor.copy(f"COPY {INCOMING} FROM STDIN (FORMAT csv)") as copy,
        ):
            copy.write(buffer.getbuffer())

    def _drop_incoming(self) -> None:
        self._execute(f"DROP TABLE {INCOMING}")

    def _transient(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.OperationalError) and self._conn.closed

    def _hint(self, exc: Exception) -> str:
        if isinstance(exc, pg_errors.DataError | pg_errors.DatatypeMismatch):
            return TYPE_CONFLICT_HINT
        if isinstance(exc, pg_errors.DiskFull | pg_errors.InsufficientResources):
            return "the PostgreSQL server is out of disk or memory; free space, then re-run"
        if isinstance(exc, psycopg.OperationalError):
            return "the connection to PostgreSQL failed; check the server, then re-run"
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return "the user needs CREATE, INSERT and DELETE on the schema's tables"
        return "see the PostgreSQL message above"

    def close(self) -> None:
        self._conn.close()


def _to_arrow(values: list[Any], oid: int, precision: int | None, scale: int | None) -> pa.Array:
    """One result column as Arrow, typed from the column's PostgreSQL type."""
    if oid == _NUMERIC_OID:
        if precision is not None and precision <= 38:
            return pa.array(values, pa.decimal128(precision, scale or 0))
        # unconstrained numeric: let Arrow size the decimal from the values
        return pa.array(values) if values else pa.array([], pa.decimal128(38, 18))
    dtype = _ARROW_OF_OID.get(oid)
    if dtype is None:
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.array(values, dtype)
