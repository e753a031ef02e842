"""Read a SQL table or query in bounded chunks, optionally incrementally by a cursor column.

Any SQLAlchemy 2 URL works: PostgreSQL (``postgresql://`` uses psycopg), MariaDB / MySQL
(``mysql://`` and ``mariadb://`` use PyMySQL), SQLite and DuckDB files (a relative path is
resolved against the project folder). Rows are streamed with a server-side cursor and turned
into Arrow tables one chunk at a time; nothing is fetched whole.

With ``cursor_column`` the source reads rows whose cursor is above the stored high-water
mark, in cursor order. Rows sharing a cursor value are never split across chunks, so the
state stored with a chunk (``{"cursor": ..., "cursor_type": ...}``) never skips a row.

>>> import sqlite3, tempfile
>>> from loopline.config.sources import SqlSourceConfig
>>> folder = Path(tempfile.mkdtemp())
>>> db = sqlite3.connect(folder / "shop.db")
>>> _ = db.executescript("CREATE TABLE orders (id INT, amount REAL);"
...                      "INSERT INTO orders VALUES (1, 9.5), (2, 3.0);")
>>> db.close()
>>> spec = SqlSourceConfig(type="sql", url="sqlite:///shop.db", table="orders",
...                        cursor_column="id")
>>> [(c.num_rows, c.state) for c in SqlSource("orders", spec, base_dir=folder).read(None)]
[(2, {'cursor': 2, 'cursor_type': 'int'})]
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Row

from loopline.config.sources import SqlSourceConfig
from loopline.errors import MissingDependencyError, SourceError, TransientSourceError
from loopline.ingest.sources.base import Chunk

logger = logging.getLogger(__name__)

_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_EXTRAS = {"psycopg": ("psycopg", "postgres"), "pymysql": ("pymysql", "mysql")}
_DIALECT_EXTRAS = {"duckdb": ("duckdb-engine", "duckdb-sql")}
_FILE_BACKENDS = ("sqlite", "duckdb")
_CONNECT_TIMEOUT_S = 10
# Connect failures that retrying cannot fix (PyMySQL codes: access denied, unknown database).
_PERMANENT_CODES = {1044, 1045, 1049, 1698}
_PERMANENT_TEXT = re.compile(
    r"authenticat|password|access denied|does not exist|unknown database|permission|"
    r"unable to open",
    re.IGNORECASE,
)
_DECIMAL_CODE = re.compile(r"(?:decimal|numeric)\((\d+),\s*(\d+)\)", re.IGNORECASE)

_TO_JSON: tuple[tuple[type, str, Callable[[Any], Any]], ...] = (
    (bool, "bool", bool),
    (int, "int", int),
    (float, "float", float),
    (Decimal, "decimal", str),
    (str, "str", str),
    (dt.datetime, "datetime", dt.datetime.isoformat),
    (dt.date, "date", dt.date.isoformat),
    (uuid.UUID, "uuid", str),
)
_FROM_JSON: dict[str, Callable[[Any], Any]] = {
    "bool": bool,
    "int": int,
    "float": float,
    "decimal": Decimal,
    "str": str,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "uuid": uuid.UUID,
}


class SqlSource:
    """A table or query of a SQL database, read in chunks of ``spec.chunk_size`` rows."""

    def __init__(self, name: str, spec: SqlSourceConfig, *, base_dir: Path) -> None:
        if (spec.table is None) == (spec.query is None):
            raise SourceError(
                "a sql source needs exactly one of 'table' or 'query'",
                source=name,
                hint="set 'table' to read a whole table, or 'query' to read a SELECT",
            )
        self.name = name
        self.spec = spec
        self.url = _normalise_url(spec.url.get_secret_value(), base_dir, name)
        self._engine = _create_engine(self.url, name)
        self._origin = f"sql:{spec.table if spec.table is not None else 'query'}"

    @property
    def redacted_url(self) -> str:
        """The URL with its password masked, safe for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    def read(self, state: Mapping[str, Any] | None) -> Iterator[Chunk]:
        """Yield chunks of rows; with a cursor, only rows above the stored high-water mark."""
        cursor = self.spec.cursor_column
        hwm = _restore_cursor(state) if state and "cursor" in state else self.spec.initial_cursor
        statement = self._statement(hwm)
        with self._connect() as conn:
            streaming = conn.execution_options(stream_results=True, yield_per=self.spec.chunk_size)
            try:
                result = streaming.execute(statement)
                try:
                    columns = _ArrowColumns(list(result.keys()), result.cursor.description)
                    parts = result.partitions(self.spec.chunk_size)
                    if cursor is None:
                        for index, rows in enumerate(parts):
                            yield Chunk(columns.table(rows), self._origin, f"full:{index}", None)
                    else:
                        key = self._key_index(list(result.keys()), cursor)
                        yield from self._incremental(parts, key, hwm, columns)
                finally:
                    # Before the connection: an unbuffered MySQL result must be finished first.
                    result.close()
            except sa.exc.DBAPIError as exc:
                raise self._read_error(exc) from exc
            except sa.exc.SQLAlchemyError as exc:
                raise self._error(f"cannot read: {exc}", hint=self._read_hint()) from exc

    def _statement(self, hwm: Any) -> sa.Executable:
        """The SELECT: identifiers quoted by SQLAlchemy, the high-water mark a bound value."""
        spec, cursor = self.spec, self.spec.cursor_column
        if spec.table is not None:
            schema, _, table = spec.table.rpartition(".")
            columns: list[sa.ColumnClause[Any]] = [sa.column(cursor)] if cursor is not None else []
            source: sa.TableClause | sa.Subquery = sa.table(table, *columns, schema=schema or None)
        else:
            # The query runs as written: escape colons so SQLAlchemy sees no bind parameters.
            text = sa.text((spec.query or "").strip().rstrip(";").replace(":", "\\:"))
            if cursor is None:
                return text
            source = text.columns(sa.column(cursor)).subquery("q")
        statement: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(source)
        if cursor is None:
            return statement
        column = source.c[cursor]
        if hwm is not None:
            statement = statement.where(column > sa.bindparam("hwm", hwm, type_=_bind_type(hwm)))
        return statement.order_by(column)

    def _incremental(
        self,
        parts: Iterable[Sequence[Row[Any]]],
        key: int,
        hwm: Any,
        columns: _ArrowColumns,
    ) -> Iterator[Chunk]:
        """Chunks that each end at a cursor value whose rows are all in the chunk."""
        size = self.spec.chunk_size
        pending: list[Row[Any]] = []
        keys: list[Any] = []
        last = hwm
        for final, part in _flagged(parts):
            pending.extend(part)
            keys.extend(row[key] for row in part)
            while n := _cut(keys, size, final=final):
                rows, chunk_keys = pending[:n], keys[:n]
                del pending[:n], keys[:n]
                top = next((k for k in reversed(chunk_keys) if k is not None), last)
                first = self._jsonable(chunk_keys[0])[0]
                position = f"cursor:{self._jsonable(last)[0]}:{first}:{n}"
                if top is None:
                    state = None
                else:
                    value, kind = self._jsonable(top)
                    state = {"cursor": value, "cursor_type": kind}
                yield Chunk(columns.table(rows), self._origin, position, state)
                last = top

    def _jsonable(self, value: Any) -> tuple[Any, str]:
        """A cursor value as (JSON-able value, type name) for the stored state."""
        if value is None:
            return None, "none"
        for kind, name, convert in _TO_JSON:
            if isinstance(value, kind):
                return convert(value), name
        raise self._error(
            f"cursor values of type {type(value).__name__} cannot be stored as a high-water mark",
            hint="use a number, text, date or timestamp column as cursor_column",
        )

    def _key_index(self, keys: list[str], cursor: str) -> int:
        if cursor in keys:
            return keys.index(cursor)
        folded = [k.lower() for k in keys]
        if folded.count(cursor.lower()) == 1:
            return folded.index(cursor.lower())
        raise self._error(
            f"cursor column {cursor!r} is not in the result",
            hint=f"cursor_column must be one of the columns: {', '.join(keys)}",
        )

    def _connect(self) -> Connection:
        database = _database_file(self.url)
        if database is not None and not database.exists():
            raise self._error(
                f"database file not found: {database}",
                hint="check the path in the URL; a relative path starts at the project folder",
            )
        try:
            return self._engine.connect()
        except sa.exc.DBAPIError as exc:
            raise self._connect_error(exc) from exc

    def _connect_error(self, exc: sa.exc.DBAPIError) -> SourceError:
        detail = _detail(exc)
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        if code in _PERMANENT_CODES or _PERMANENT_TEXT.search(detail):
            return self._error(
                f"cannot connect to the database: {detail}",
                hint="check the user, password, host and database name in the URL",
            )
        where = f"{self.url.host}:{self.url.port}" if self.url.host else "the configured address"
        return TransientSourceError(
            f"cannot connect to the database: {detail}",
            source=self.name,
            url=self.redacted_url,
            table=self.spec.table,
            hint=f"check that the database server runs and is reachable at {where}; "
            "the read can be retried",
        )

    def _read_error(self, exc: sa.exc.DBAPIError) -> SourceError:
        if exc.connection_invalidated:
            return TransientSourceError(
                f"the database connection was lost: {_detail(exc)}",
                source=self.name,
                url=self.redacted_url,
                table=self.spec.table,
                hint="the read can be retried; it resumes from the last stored state",
            )
        what = f"table {self.spec.table!r}" if self.spec.table is not None else "the query"
        return self._error(f"cannot read {what}: {_detail(exc)}", hint=self._read_hint())

    def _read_hint(self) -> str:
        if self.spec.table is not None:
            return (
                "check that the table exists (write schema.table for another schema) "
                "and that the user may read it"
            )
        return "check the SQL: it runs unchanged on the database, so try it in a SQL client"

    def _error(self, message: str, *, hint: str) -> SourceError:
        return SourceError(
            message, source=self.name, url=self.redacted_url, table=self.spec.table, hint=hint
        )


class _ArrowColumns:
    """Turns chunks of rows into Arrow tables whose column types stay the same chunk to chunk.

    Types come from the values; decimals take precision and scale from the cursor description
    (``float64`` where the database does not say), timestamps with a zone become UTC.
    """

    def __init__(self, names: list[str], description: Sequence[Sequence[Any]] | None) -> None:
        self._names = names
        self._decimals = [_decimal_type(d) for d in description or [()] * len(names)]
        self._types: list[pa.DataType | None] = [None] * len(names)

    def table(self, rows: Sequence[Row[Any]]) -> pa.Table:
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in self._names]
        arrays = [self._array(i, values) for i, values in enumerate(columns)]
        return pa.Table.from_arrays(arrays, names=self._names)

    def _array(self, i: int, values: Sequence[Any]) -> pa.Array:
        try:
            array = pa.array(values, from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            logger.warning("column %r has mixed value types; read as text", self._names[i])
            array = _as_text(values)
        if isinstance(array.type, pa.ExtensionType):  # e.g. UUIDs: text travels everywhere
            array = _as_text(values)
        elif pa.types.is_decimal(array.type):
            array = array.cast(self._decimals[i] or pa.float64())
        elif pa.types.is_timestamp(array.type) and array.type.tz is not None:
            array = array.cast(pa.timestamp(array.type.unit, "UTC"))
        target = self._types[i]
        if pa.types.is_null(array.type):
            return pa.nulls(len(array), target) if target is not None else array
        if target is None:
            self._types[i] = array.type
        elif array.type != target:
            try:
                array = array.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                logger.warning(
                    "column %r changed type from %s to %s", self._names[i], target, array.type
                )
                self._types[i] = array.type
        return array


def _flagged(parts: Iterable[Sequence[Row[Any]]]) -> Iterator[tuple[bool, Sequence[Row[Any]]]]:
    """The parts, each flagged ``False``, then one empty part flagged ``True`` (the end)."""
    for part in parts:
        yield False, part
    yield True, []


def _cut(keys: Sequence[Any], size: int, *, final: bool) -> int:
    """How many leading rows form a chunk that ends with a whole cursor value; 0: read more.

    >>> _cut([1, 2, 2, 3], 2, final=False), _cut([1, 2, 2, 3], 3, final=False)
    (1, 3)
    >>> _cut([2, 2, 2, 3], 2, final=False), _cut([2, 2], 1, final=False)
    (3, 0)
    >>> _cut([2, 2], 1, final=True)
    2
    """
    n = len(keys)
    if n <= size:
        return n if final else 0
    for k in range(size, 0, -1):
        if keys[k - 1] != keys[k]:
            return k
    # The first value alone has more rows than a chunk: emit all of them together.
    for k in range(size + 1, n):
        if keys[k - 1] != keys[k]:
            return k
    return n if final else 0


def _restore_cursor(state: Mapping[str, Any]) -> Any:
    value, kind = state["cursor"], state.get("cursor_type")
    if value is None or kind not in _FROM_JSON:
        return value
    return _FROM_JSON[kind](value)


def _bind_type(value: Any) -> sa.types.TypeEngine[Any]:
    """The bound high-water mark's SQL type, so the comparison is typed on every backend."""
    if isinstance(value, bool):
        return sa.Boolean()
    if isinstance(value, int):
        return sa.BigInteger()
    if isinstance(value, float):
        return sa.Float()
    if isinstance(value, Decimal):
        return sa.Numeric()
    if isinstance(value, dt.datetime):
        return sa.DateTime(timezone=value.tzinfo is not None)
    if isinstance(value, dt.date):
        return sa.Date()
    if isinstance(value, uuid.UUID):
        return sa.Uuid()
    # Text (e.g. an ISO initial_cursor) is sent untyped, so the server casts it to the column.
    return sa.types.NullType()


def _decimal_type(description: Sequence[Any]) -> pa.DataType | None:
    """A decimal column's Arrow type from a DB-API cursor description entry, if it says."""
    match = _DECIMAL_CODE.search(str(description[1])) if len(description) > 1 else None
    if match:
        precision, scale = int(match[1]), int(match[2])
    elif len(description) > 5 and isinstance(description[4], int) and description[4] > 0:
        precision, scale = description[4], description[5] or 0
    else:
        return None
    precision = max(precision, scale + 1)
    if precision <= 38:
        return pa.decimal128(precision, scale)
    return pa.decimal256(precision, scale) if precision <= 76 else None


def _as_text(values: Sequence[Any]) -> pa.Array:
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _detail(exc: sa.exc.DBAPIError) -> str:
    """The driver's message on one line, without SQLAlchemy's statement dump."""
    return " ".join(str(exc.orig if exc.orig is not None else exc).split())


def _normalise_url(raw: str, base_dir: Path, name: str) -> URL:
    try:
        url = sa.make_url(raw)
    except sa.exc.ArgumentError as exc:
        raise SourceError(
            "the database URL cannot be parsed",
            source=name,
            hint="write it as dialect+driver://user:password@host:port/database",
        ) from exc
    url = url.set(drivername=_DEFAULT_DRIVERS.get(url.drivername, url.drivername))
    database = _database_file(url)
    if database is not None and not database.is_absolute():
        url = url.set(database=str(base_dir / database))
    return url


def _database_file(url: URL) -> Path | None:
    """The file of a SQLite / DuckDB URL; ``None`` for servers, memory and ``file:`` URIs."""
    database = url.database
    if url.get_backend_name() not in _FILE_BACKENDS or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _create_engine(url: URL, name: str) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
    try:
        return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        extra = _EXTRAS.get(driver) or _DIALECT_EXTRAS.get(backend)
        if extra is not None:
            raise MissingDependencyError(*extra) from exc
        raise SourceError(
            f"no SQLAlchemy driver for {url.drivername!r}",
            source=name,
            hint="install the database's SQLAlchemy dialect and driver, or fix the URL scheme",
        ) from exc
    except sa.exc.ArgumentError as exc:
        raise SourceError(
            f"invalid database URL: {exc}",
            source=name,
            url=url.render_as_string(hide_password=True),
            hint="check the URL's options",
        ) from exc
