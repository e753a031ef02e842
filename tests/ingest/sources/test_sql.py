"""SqlSource against real databases: PostgreSQL, MariaDB (services), SQLite and DuckDB files."""

from __future__ import annotations

import datetime as dt
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from loopline.config.sources import SqlSourceConfig
from loopline.errors import MissingDependencyError, SourceError, TransientSourceError
from loopline.ingest.sources.base import Chunk, Source
from loopline.ingest.sources.sql import SqlSource

BACKENDS = [
    pytest.param("postgres", marks=pytest.mark.services),
    pytest.param("mariadb", marks=pytest.mark.services),
    "sqlite",
    "duckdb",
]
SCHEMA = sa.MetaData()
ITEMS = sa.Table(
    "items",
    SCHEMA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("amount", sa.Float),
    sa.Column("name", sa.String(40)),
    sa.Column("ts", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")),
    sa.Column("price", sa.Numeric(12, 2)),
)
EVENTS = sa.Table(
    "events",
    SCHEMA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("batch", sa.Integer),
)


@dataclass
class Db:
    backend: str
    url: str
    engine: sa.Engine
    base_dir: Path

    def source(self, *, chunk_size: int = 7, **spec: Any) -> SqlSource:
        config = SqlSourceConfig(type="sql", url=self.url, chunk_size=chunk_size, **spec)
        return SqlSource("items", config, base_dir=self.base_dir)


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """An empty ``items`` and ``events`` table on the backend named by the parameter."""
    backend: str = request.param
    if backend in ("postgres", "mariadb"):
        url = engine_url = request.getfixturevalue(f"{backend}_url")
    else:
        url = f"{backend}:///shop.{backend}"  # relative: the source resolves it
        engine_url = f"{backend}:///{tmp_path / f'shop.{backend}'}"
    engine = sa.create_engine(engine_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        SCHEMA.create_all(conn, checkfirst=False)
    yield Db(backend, url, engine, tmp_path)
    engine.dispose()


def item(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "amount": i * 1.5,
        "name": None if i % 5 == 0 else f"name {i}",
        "ts": dt.datetime(2024, 1, 1) + dt.timedelta(hours=i, microseconds=i),
        "price": Decimal(f"{i}.25"),
    }


def add_items(db: Db, ids: range) -> None:
    with db.engine.begin() as conn:
        conn.execute(ITEMS.insert(), [item(i) for i in ids])


def read_all(source: Source, state: dict[str, Any] | None = None) -> list[Chunk]:
    return list(source.read(state))


def ids_of(chunks: list[Chunk]) -> list[int]:
    return [i for chunk in chunks for i in chunk.data.column("id").to_pylist()]


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_full_read_yields_bounded_chunks_holding_every_row_and_value(db: Db) -> None:
    add_items(db, range(1, 51))
    chunks = read_all(db.source(table="items", chunk_size=7))

    assert [c.num_rows for c in chunks] == [7] * 7 + [1]
    assert [c.position for c in chunks] == [f"full:{i}" for i in range(8)]
    assert {c.state for c in chunks} == {None}
    assert {c.origin for c in chunks} == {"sql:items"}
    table = pa.concat_tables(c.data for c in chunks).sort_by("id")
    assert table.column_names == ["id", "amount", "name", "ts", "price"]
    expected = [item(i) for i in range(1, 51)]
    assert table.column("id").to_pylist() == list(range(1, 51))
    assert table.column("amount").to_pylist() == [r["amount"] for r in expected]
    assert table.column("name").to_pylist() == [r["name"] for r in expected]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("name").type == pa.string()
    if db.backend == "sqlite":  # no date or decimal types in SQLite: what it stores is read
        assert table.column("ts").to_pylist()[0] == "2024-01-01 01:00:00.000001"
        assert table.column("price").to_pylist() == [float(r["price"]) for r in expected]
    else:
        assert table.schema.field("ts").type == pa.timestamp("us")
        assert table.column("ts").to_pylist() == [r["ts"] for r in expected]
        price = table.schema.field("price").type
        assert pa.types.is_decimal(price)
        assert price.scale == 2
        assert table.column("price").to_pylist() == [r["price"] for r in expected]


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_incremental_second_run_reads_only_rows_added_since_the_first(db: Db) -> None:
    add_items(db, range(1, 51))
    source = db.source(table="items", cursor_column="id", chunk_size=7)

    first = read_all(source)
    assert ids_of(first) == list(range(1, 51))
    assert first[-1].state == {"cursor": 50, "cursor_type": "int"}
    add_items(db, range(51, 61))
    second = read_all(source, first[-1].state)

    assert ids_of(second) == list(range(51, 61))
    assert second[0].position == "cursor:50:51:7"
    assert read_all(source, second[-1].state) == []


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_rows_sharing_a_cursor_value_are_read_exactly_once_across_chunks(db: Db) -> None:
    sizes = [3, 5, 1, 4, 9, 2, 4]  # groups straddle every boundary of 4-row chunks
    batches = [b for b, n in enumerate(sizes, start=1) for _ in range(n)]
    with db.engine.begin() as conn:
        conn.execute(EVENTS.insert(), [{"id": i, "batch": b} for i, b in enumerate(batches)])
    source = db.source(table="events", cursor_column="batch", chunk_size=4)

    chunks = read_all(source)

    assert sorted(ids_of(chunks)) == list(range(len(batches)))
    for before, after in itertools.pairwise(chunks):
        assert before.data.column("batch").to_pylist()[-1] not in after.data.column("batch")
    # A crash after any chunk resumes from its state without losing or repeating a row.
    for k, chunk in enumerate(chunks):
        assert chunk.state is not None
        resumed = ids_of(read_all(source, chunk.state))  # order within a value is free
        assert sorted(resumed) == sorted(ids_of(chunks[k + 1 :]))
    assert max(c.num_rows for c in chunks) == 9  # one value with 9 rows stays whole


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_timestamp_cursor_state_is_json_and_compared_as_a_timestamp(db: Db) -> None:
    add_items(db, range(1, 21))
    source = db.source(table="items", cursor_column="ts", chunk_size=6)

    first = read_all(source)
    state = first[-1].state
    assert state is not None
    if db.backend == "sqlite":
        assert state == {"cursor": "2024-01-01 20:00:00.000020", "cursor_type": "str"}
    else:
        assert state == {"cursor": "2024-01-01T20:00:00.000020", "cursor_type": "datetime"}
    add_items(db, range(21, 24))

    assert ids_of(read_all(source, state)) == [21, 22, 23]


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_query_mode_wraps_the_query_and_binds_the_cursor(db: Db) -> None:
    add_items(db, range(1, 51))
    query = "SELECT id, name, 'a:b%' AS tag FROM items WHERE amount >= 0;"
    source = db.source(query=query, cursor_column="id", initial_cursor=40, chunk_size=4)

    chunks = read_all(source)

    assert ids_of(chunks) == list(range(41, 51))
    assert {c.origin for c in chunks} == {"sql:query"}
    assert set(pa.concat_tables(c.data for c in chunks).column("tag").to_pylist()) == {"a:b%"}
    assert chunks[-1].state == {"cursor": 50, "cursor_type": "int"}


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_query_mode_without_cursor_reads_the_query_in_chunks(db: Db) -> None:
    add_items(db, range(1, 11))
    source = db.source(query="SELECT id FROM items WHERE id <= 8", chunk_size=3)

    chunks = read_all(source)

    assert [c.num_rows for c in chunks] == [3, 3, 2]
    assert sorted(ids_of(chunks)) == list(range(1, 9))


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_table_name_with_sql_text_is_quoted_not_executed(db: Db) -> None:
    add_items(db, range(1, 6))
    odd = "odd name'\"; DROP TABLE items; --"
    weird = sa.Table(odd, sa.MetaData(), sa.Column("id", sa.Integer))
    with db.engine.begin() as conn:
        weird.create(conn, checkfirst=False)
        conn.execute(weird.insert(), [{"id": 1}, {"id": 2}])

    assert ids_of(read_all(db.source(table=odd, cursor_column="id"))) == [1, 2]
    with pytest.raises(SourceError):
        read_all(db.source(table="items; DROP TABLE items"))
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ITEMS)).scalar() == 5


@pytest.mark.parametrize("db", ["sqlite", "duckdb"], indirect=True)
def test_dotted_table_name_is_schema_and_table(db: Db) -> None:
    add_items(db, range(1, 4))

    assert ids_of(read_all(db.source(table="main.items", cursor_column="id"))) == [1, 2, 3]


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_missing_table_is_a_source_error_naming_the_table(db: Db) -> None:
    with pytest.raises(SourceError) as info:
        read_all(db.source(table="no_such_table"))

    assert not isinstance(info.value, TransientSourceError)
    assert info.value.fields["table"] == "no_such_table"
    assert "no_such_table" in str(info.value)
    assert info.value.hint is not None
    assert "table exists" in info.value.hint


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_bad_sql_is_a_source_error_with_a_hint(db: Db) -> None:
    with pytest.raises(SourceError) as info:
        read_all(db.source(query="SELEKT id FROM items"))

    assert not isinstance(info.value, TransientSourceError)
    assert "cannot read the query" in str(info.value)
    assert info.value.hint is not None
    assert "SQL" in info.value.hint


@pytest.mark.parametrize(
    "url", ["postgresql://loader:s3cret@127.0.0.1:1/db", "mysql://loader:s3cret@127.0.0.1:1/db"]
)
def test_unreachable_server_is_a_transient_error_with_the_password_hidden(
    url: str, tmp_path: Path
) -> None:
    spec = SqlSourceConfig(type="sql", url=url, table="items")

    with pytest.raises(TransientSourceError) as info:
        read_all(SqlSource("items", spec, base_dir=tmp_path))

    text = str(info.value)
    assert "s3cret" not in text
    assert "loader:***@127.0.0.1:1" in text
    assert info.value.hint is not None
    assert "127.0.0.1:1" in info.value.hint


@pytest.mark.services
@pytest.mark.parametrize("db", ["postgres", "mariadb"], indirect=True)
def test_bad_credentials_are_a_permanent_source_error(db: Db) -> None:
    url = sa.make_url(db.url).set(username="nobody_here", password="wrong")
    spec = SqlSourceConfig(type="sql", url=url.render_as_string(False), table="items")

    with pytest.raises(SourceError) as info:
        read_all(SqlSource("items", spec, base_dir=db.base_dir))

    assert not isinstance(info.value, TransientSourceError)
    assert "wrong" not in str(info.value)
    assert info.value.hint is not None
    assert "password" in info.value.hint


@pytest.mark.services
@pytest.mark.parametrize("db", ["postgres", "mariadb"], indirect=True)
def test_plain_scheme_uses_the_bundled_driver(db: Db) -> None:
    add_items(db, range(1, 4))
    plain = db.url.replace("postgresql+psycopg://", "postgresql://").replace(
        "mysql+pymysql://", "mariadb://"
    )
    source = SqlSource(
        "items", SqlSourceConfig(type="sql", url=plain, table="items"), base_dir=db.base_dir
    )

    assert source.url.drivername in ("postgresql+psycopg", "mariadb+pymysql")
    assert sorted(ids_of(read_all(source))) == [1, 2, 3]


@pytest.mark.services
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_postgres_zoned_timestamps_become_utc_and_free_numerics_float(db: Db) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE zoned (id int, at timestamptz, n numeric)"))
        conn.execute(
            sa.text(
                "INSERT INTO zoned VALUES (1, '2024-03-01 12:00:00+02', 1.5), "
                "(2, '2024-03-01 12:00:00.5+00', NULL), (3, '2024-03-01 12:00:01+00', 2)"
            )
        )
    source = db.source(table="zoned", cursor_column="at", chunk_size=2)

    chunks = read_all(source)
    table = pa.concat_tables(c.data for c in chunks)

    assert table.schema.field("at").type == pa.timestamp("us", "UTC")
    assert table.schema.field("n").type == pa.float64()
    utc = dt.UTC
    assert table.column("at").to_pylist() == [
        dt.datetime(2024, 3, 1, 10, 0, tzinfo=utc),
        dt.datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=utc),
        dt.datetime(2024, 3, 1, 12, 0, 1, tzinfo=utc),
    ]
    assert table.column("n").to_pylist() == [1.5, None, 2.0]
    state = chunks[0].state
    assert state is not None
    assert state["cursor_type"] == "datetime"
    assert ids_of(read_all(source, state)) == [3]


def test_table_and_query_together_are_rejected(tmp_path: Path) -> None:
    spec = SqlSourceConfig(type="sql", url="sqlite:///a.db", table="t", query="SELECT 1")

    with pytest.raises(SourceError, match="exactly one of 'table' or 'query'"):
        SqlSource("s", spec, base_dir=tmp_path)


def test_neither_table_nor_query_is_rejected(tmp_path: Path) -> None:
    spec = SqlSourceConfig(type="sql", url="sqlite:///a.db")

    with pytest.raises(SourceError, match="exactly one of 'table' or 'query'"):
        SqlSource("s", spec, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("mysql://u@h/db", "mysql+pymysql"),
        ("mariadb://u@h/db", "mariadb+pymysql"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
    ],
)
def test_plain_schemes_map_to_the_bundled_drivers(url: str, driver: str, tmp_path: Path) -> None:
    spec = SqlSourceConfig(type="sql", url=url, table="t")

    assert SqlSource("s", spec, base_dir=tmp_path).url.drivername == driver


def test_relative_file_path_resolves_against_base_dir(tmp_path: Path) -> None:
    spec = SqlSourceConfig(type="sql", url="duckdb:///data/w.duckdb", table="t")

    assert SqlSource("s", spec, base_dir=tmp_path).url.database == str(tmp_path / "data/w.duckdb")


def test_missing_database_file_is_reported_and_not_created(tmp_path: Path) -> None:
    spec = SqlSourceConfig(type="sql", url="sqlite:///missing.db", table="t")

    with pytest.raises(SourceError, match="database file not found"):
        read_all(SqlSource("s", spec, base_dir=tmp_path))
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [("pymysql", "mysql://u@h/db", "mysql"), ("psycopg", "postgresql://u@h/db", "postgres")],
)
def test_missing_driver_names_the_extra(
    module: str, url: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    spec = SqlSourceConfig(type="sql", url=url, table="t")

    with pytest.raises(MissingDependencyError) as info:
        SqlSource("s", spec, base_dir=tmp_path)

    assert info.value.hint == f"pip install 'loopline[{extra}]'"


def test_sql_source_satisfies_the_source_protocol(tmp_path: Path) -> None:
    spec = SqlSourceConfig(type="sql", url="sqlite:///a.db", table="t")

    assert isinstance(SqlSource("s", spec, base_dir=tmp_path), Source)


@pytest.mark.parametrize("db", [b for b in BACKENDS if b != "sqlite"], indirect=True)
def test_iso_text_initial_cursor_is_compared_as_a_timestamp(db: Db) -> None:
    add_items(db, range(1, 15))
    source = db.source(table="items", cursor_column="ts", initial_cursor="2024-01-01T10:00:00")

    assert ids_of(read_all(source)) == [10, 11, 12, 13, 14]


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_stopping_after_the_first_chunk_releases_the_connection(db: Db) -> None:
    add_items(db, range(1, 51))
    chunks = db.source(table="items", cursor_column="id", chunk_size=5).read(None)

    assert next(chunks).num_rows == 5
    chunks.close()  # type: ignore[attr-defined]
    add_items(db, range(51, 53))  # the table is not locked by a half-read cursor
    assert len(ids_of(read_all(db.source(table="items")))) == 52


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_cursor_of_an_unstorable_type_is_a_source_error(db: Db) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE blobs (k BLOB)"))
        conn.execute(sa.text("INSERT INTO blobs VALUES (x'01'), (x'02')"))

    with pytest.raises(SourceError, match="bytes cannot be stored as a high-water mark"):
        read_all(db.source(table="blobs", cursor_column="k"))
