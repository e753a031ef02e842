"""PostgreSQL specifics: type mapping, search_path, URLs, COPY loading, connection errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest
from tests.store.arrow_cases import every_type

from loopline.errors import SinkError, StoreError
from loopline.store.postgres_warehouse import PostgresWarehouse, pg_type


@pytest.fixture
def warehouse(postgres_url: str) -> Iterator[PostgresWarehouse]:
    wh = PostgresWarehouse(postgres_url)
    yield wh
    wh.close()


def append(wh: PostgresWarehouse, data: pa.Table, table: str = "t", mode: str = "append") -> int:
    return wh.commit_batch(
        table=table,
        data=data,
        mode=mode,  # type: ignore[arg-type]
        key=["id"] if mode == "merge" else [],
        quarantine=None,
        job="j",
        batch_id="b1",
        state=None,
    )


def column_types(wh: PostgresWarehouse, table: str) -> dict[str, str]:
    described = wh.query(
        "SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        [f'"{table}"'],
    )
    return dict(
        zip(described.column("name").to_pylist(), described.column("type").to_pylist(), strict=True)
    )


@pytest.mark.services
def test_arrow_types_map_to_postgres_types(warehouse: PostgresWarehouse) -> None:
    append(warehouse, every_type())

    assert column_types(warehouse, "t") == {
        "s": "text",
        "i64": "bigint",
        "i32": "integer",
        "f64": "double precision",
        "b": "boolean",
        "d": "date",
        "ts_utc": "timestamp with time zone",
        "ts": "timestamp without time zone",
        "dec": "numeric(12,3)",
        "st": "jsonb",
        "l": "jsonb",
        "_batch_id": "text",
    }


@pytest.mark.services
def test_every_type_round_trips_with_nested_values_as_json(warehouse: PostgresWarehouse) -> None:
    data = every_type()
    append(warehouse, data)

    stored = warehouse.read_table("t").drop_columns(["_batch_id"])

    flat = [name for name in data.column_names if name not in ("st", "l")]
    assert stored.select(flat).equals(data.select(flat))
    assert stored.schema.field("st").type == pa.string()
    parsed = {
        name: [None if v is None else json.loads(v) for v in stored.column(name).to_pylist()]
        for name in ("st", "l")
    }
    assert parsed == {"st": data.column("st").to_pylist(), "l": data.column("l").to_pylist()}


@pytest.mark.services
def test_table_schema_maps_back_from_postgres_types(warehouse: PostgresWarehouse) -> None:
    append(warehouse, every_type())

    schema = warehouse.table_schema("t")

    assert schema is not None
    expected = every_type().schema
    for name in ("s", "i64", "i32", "f64", "b", "d", "ts_utc", "ts", "dec"):
        assert schema.field(name).type == expected.field(name).type, name


@pytest.mark.services
def test_view_strings_binary_and_unsigned_ints_are_loaded(warehouse: PostgresWarehouse) -> None:
    data = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "sv": pa.array(["x", None], pa.string_view()),
            "bin": pa.array([b"\x00\xff", None]),
            "u64": pa.array([2**64 - 1, 0], pa.uint64()),
            "cat": pa.array(["a", "b"]).dictionary_encode(),
        }
    )

    append(warehouse, data)

    stored = warehouse.query("SELECT sv, bin, u64, cat FROM t ORDER BY id").to_pylist()
    assert stored == [
        {"sv": "x", "bin": b"\x00\xff", "u64": Decimal(2**64 - 1), "cat": "a"},
        {"sv": None, "bin": None, "u64": Decimal(0), "cat": "b"},
    ]


@pytest.mark.services
def test_a_nul_character_in_text_is_stored_escaped_instead_of_failing_the_batch(
    warehouse: PostgresWarehouse,
) -> None:
    data = pa.table({"id": pa.array([1, 2], pa.int64()), "s": ["a\x00b", "plain"]})

    append(warehouse, data)

    stored = warehouse.query("SELECT s FROM t ORDER BY id").column("s").to_pylist()
    assert stored == ["a\\x00b", "plain"]


@pytest.mark.services
def test_tables_land_in_the_search_path_schema(
    warehouse: PostgresWarehouse, postgres_url: str
) -> None:
    append(warehouse, pa.table({"id": [1]}))

    schema = postgres_url.rsplit("%3D", 1)[1]
    found = warehouse.query(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 't' "
        "AND table_schema IN ($1, 'public')",
        [schema],
    )
    assert found.column(0).to_pylist() == [schema]
    assert warehouse.tables() == ["t"]


@pytest.mark.services
def test_plain_and_psycopg_url_schemes_reach_the_same_tables(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    first = PostgresWarehouse(postgres_url)
    second = PostgresWarehouse(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        append(first, pa.table({"id": [1]}))
        assert second.read_table("t").column("id").to_pylist() == [1]
    finally:
        first.close()
        second.close()


@pytest.mark.services
def test_merge_tables_get_a_unique_index_on_the_key(warehouse: PostgresWarehouse) -> None:
    append(warehouse, pa.table({"id": [1, 2], "v": ["a", "b"]}), mode="merge")

    indexes = warehouse.query("SELECT indexdef FROM pg_indexes WHERE tablename = 't'")

    assert [d for d in indexes.column(0).to_pylist() if "UNIQUE" in d and "(id)" in d]


@pytest.mark.services
def test_table_names_over_63_bytes_are_a_store_error(warehouse: PostgresWarehouse) -> None:
    with pytest.raises(StoreError, match="too long"):
        append(warehouse, pa.table({"id": [1]}), table="x" * 64)
    with pytest.raises(StoreError, match="too long"):  # room for the staging prefix
        append(warehouse, pa.table({"id": [1]}), table="x" * 60, mode="replace")


@pytest.mark.services
def test_unsupported_type_fails_the_batch_and_writes_nothing(warehouse: PostgresWarehouse) -> None:
    data = pa.table({"id": [1], "span": pa.array([5], pa.duration("s"))})

    with pytest.raises(SinkError, match="no PostgreSQL type"):
        append(warehouse, data)

    assert warehouse.tables() == []


def test_connection_failure_is_a_store_error_without_the_password() -> None:
    url = "postgresql://bob:s3cret@127.0.0.1:1/db"

    with pytest.raises(StoreError, match="cannot connect") as info:
        PostgresWarehouse(url, connect_timeout=2)

    assert info.value.fields["url"] == "postgresql://bob:***@127.0.0.1:1/db"
    assert "s3cret" not in str(info.value)
    assert info.value.hint
    assert info.value.__cause__ is not None


def test_pg_type_names_the_problem_for_unmappable_types() -> None:
    with pytest.raises(SinkError) as info:
        pg_type(pa.duration("s"))

    assert "cast the column" in (info.value.hint or "")


@pytest.mark.services
def test_a_lost_connection_is_a_sink_error_that_says_so(
    warehouse: PostgresWarehouse, postgres_url: str
) -> None:
    append(warehouse, pa.table({"id": [1]}))
    pid = warehouse.query("SELECT pg_backend_pid() AS pid").column("pid")[0].as_py()
    killer = PostgresWarehouse(postgres_url)
    try:
        killer.query("SELECT pg_terminate_backend($1)", [pid])
        with pytest.raises(SinkError) as info:
            append(warehouse, pa.table({"id": [2]}))
        assert "connection" in (info.value.hint or "")
        assert killer.read_table("t").column("id").to_pylist() == [1]
    finally:
        killer.close()
