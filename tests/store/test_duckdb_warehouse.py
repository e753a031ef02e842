"""DuckDB specifics: native Arrow types, one thread, one process per file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from tests.store.arrow_cases import every_type

from loopline.errors import StoreError
from loopline.store.duckdb_warehouse import DuckDBWarehouse


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    yield wh
    wh.close()


def test_every_arrow_type_round_trips_exactly(warehouse: DuckDBWarehouse) -> None:
    data = every_type()

    warehouse.commit_batch(
        table="t",
        data=data,
        mode="append",
        key=[],
        quarantine=None,
        job="j",
        batch_id="b1",
        state=None,
    )

    stored = warehouse.read_table("t").drop_columns(["_batch_id"])
    assert stored.schema.equals(data.schema)
    assert stored.equals(data)


def test_view_and_large_strings_are_stored_as_text(warehouse: DuckDBWarehouse) -> None:
    data = pa.table(
        {
            "sv": pa.array(["x", None], pa.string_view()),
            "ls": pa.array(["y", "z"], pa.large_string()),
        }
    )

    warehouse.commit_batch(
        table="t",
        data=data,
        mode="append",
        key=[],
        quarantine=None,
        job="j",
        batch_id="b1",
        state=None,
    )

    schema = warehouse.table_schema("t")
    assert schema is not None
    assert (schema.field("sv").type, schema.field("ls").type) == (pa.string(), pa.string())
    assert warehouse.read_table("t").column("sv").to_pylist() == ["x", None]


def test_queries_run_on_one_thread_by_default(warehouse: DuckDBWarehouse) -> None:
    threads = warehouse.query("SELECT current_setting('threads') AS n").column("n")

    assert threads.to_pylist() == [1]


def test_tables_persist_in_the_file(tmp_path: Path) -> None:
    first = DuckDBWarehouse(tmp_path / "deep" / "folder" / "wh.duckdb")
    first.commit_batch(
        table="t",
        data=pa.table({"id": [1]}),
        mode="append",
        key=[],
        quarantine=None,
        job="j",
        batch_id="b1",
        state={"n": 1},
    )
    first.close()

    second = DuckDBWarehouse(tmp_path / "deep" / "folder" / "wh.duckdb")
    try:
        assert second.read_table("t").column("id").to_pylist() == [1]
        assert second.read_state("j") == {"n": 1}
    finally:
        second.close()


def test_a_second_process_cannot_open_a_held_file(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        "from loopline.errors import StoreError\n"
        "from loopline.store.duckdb_warehouse import DuckDBWarehouse\n"
        "try:\n"
        "    DuckDBWarehouse(sys.argv[1])\n"
        "except StoreError as exc:\n"
        "    print(exc.hint)\n"
        "    raise SystemExit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "wh.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 3, done.stderr
    assert "one process at a time" in done.stdout


def test_a_closed_warehouse_is_a_store_error(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    wh.close()

    with pytest.raises(StoreError, match="query failed"):
        wh.tables()


def test_a_folder_in_place_of_the_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "wh.duckdb").mkdir()

    with pytest.raises(StoreError, match="cannot open"):
        DuckDBWarehouse(tmp_path / "wh.duckdb")
