"""``commit_tables``: several tables, quarantine rows and state in one transaction (each test
runs on DuckDB and on a real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pytest
from tests.store.test_warehouse_conformance import quarantine_rows

from loopline.errors import SinkError
from loopline.store.destination import QUARANTINE_TABLE, STATE_TABLE, TableWrite
from loopline.store.warehouse import SqlWarehouse

OpenWarehouse = Callable[[], SqlWarehouse]


def commit(
    wh: SqlWarehouse,
    writes: Sequence[TableWrite],
    *,
    batch_id: str = "b1",
    state: dict[str, Any] | None = None,
    quarantine: pa.Table | None = None,
    new_batch: bool = False,
) -> int:
    return wh.commit_tables(
        writes,
        quarantine=quarantine,
        job="job",
        batch_id=batch_id,
        state=state,
        new_batch=new_batch,
    )


def rows(wh: SqlWarehouse, table: str, columns: str = "*") -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = wh.query(
        f'SELECT {columns} FROM "{table}" ORDER BY id'
    ).to_pylist()
    return result


def readings(*ids: int) -> TableWrite:
    return TableWrite("readings", pa.table({"id": list(ids), "v": [f"r{i}" for i in ids]}))


def windows(**means: float) -> TableWrite:
    data = pa.table({"id": [int(k[1:]) for k in means], "mean": list(means.values())})
    return TableWrite("windows", data, "merge", ("id",))


def test_every_part_quarantine_and_state_land_with_the_batch_id(warehouse: SqlWarehouse) -> None:
    written = commit(
        warehouse,
        [readings(1, 2), windows(w1=1.5)],
        state={"watermark": 10},
        quarantine=quarantine_rows("b1"),
    )

    assert written == 3
    assert rows(warehouse, "readings") == [
        {"id": 1, "v": "r1", "_batch_id": "b1"}, {"id": 2, "v": "r2", "_batch_id": "b1"},
    ]  # fmt: skip
    assert rows(warehouse, "windows") == [{"id": 1, "mean": 1.5, "_batch_id": "b1"}]
    assert warehouse.read_table(QUARANTINE_TABLE).column("_batch_id").to_pylist() == ["b1"]
    assert warehouse.read_state("job") == {"watermark": 10}


def test_recommitting_a_batch_replaces_appends_and_merges_by_key(warehouse: SqlWarehouse) -> None:
    commit(warehouse, [readings(1, 2), windows(w1=1.5)], quarantine=quarantine_rows("b1"))
    commit(warehouse, [readings(3), windows(w1=2.5, w2=4.0)], batch_id="b2")
    # b1 again (a redelivery after a lost connection): nothing doubles, the merge updates
    commit(warehouse, [readings(1, 2), windows(w1=1.0)], quarantine=quarantine_rows("b1"))

    assert [r["id"] for r in rows(warehouse, "readings")] == [1, 2, 3]
    assert rows(warehouse, "windows", "id, mean") == [
        {"id": 1, "mean": 1.0}, {"id": 2, "mean": 4.0},
    ]  # fmt: skip
    assert warehouse.read_table(QUARANTINE_TABLE).num_rows == 1


def test_a_failing_part_rolls_back_every_other_part_and_the_state(
    warehouse: SqlWarehouse,
) -> None:
    commit(warehouse, [readings(1), windows(w1=1.5)], state={"watermark": 1})
    bad = pa.table({"id": [2], "mean": ["not a number"]})
    bad_windows = TableWrite("windows", bad, "merge", ("id",))

    with pytest.raises(SinkError) as info:  # readings go in first, then the windows fail
        commit(warehouse, [readings(2), bad_windows, TableWrite("more", pa.table({"id": [3]}))])

    assert info.value.fields["table"] == "windows"
    assert info.value.hint
    assert [r["id"] for r in rows(warehouse, "readings")] == [1]
    assert rows(warehouse, "windows", "id, mean") == [{"id": 1, "mean": 1.5}]
    assert "more" not in warehouse.tables()
    assert warehouse.read_state("job") == {"watermark": 1}
    commit(warehouse, [readings(4)], batch_id="b4")  # the connection still works
    assert [r["id"] for r in rows(warehouse, "readings")] == [1, 4]


def test_a_merge_sets_stored_columns_the_batch_lacks_to_null(warehouse: SqlWarehouse) -> None:
    wide = pa.table({"id": [1, 2], "mean": [1.5, 2.5], "p95": [3.0, 4.0]})
    commit(warehouse, [TableWrite("windows", wide, "merge", ("id",))])
    commit(warehouse, [windows(w1=9.0, w3=7.0)], batch_id="b2")

    assert rows(warehouse, "windows", "id, mean, p95") == [
        {"id": 1, "mean": 9.0, "p95": None},
        {"id": 2, "mean": 2.5, "p95": 4.0},
        {"id": 3, "mean": 7.0, "p95": None},
    ]


def test_only_state_and_quarantine_may_be_committed(warehouse: SqlWarehouse) -> None:
    assert commit(warehouse, [], state={"n": 1}, quarantine=quarantine_rows("b1")) == 0

    assert warehouse.read_state("job") == {"n": 1}
    assert set(warehouse.tables()) == {QUARANTINE_TABLE, STATE_TABLE}


def test_replace_parts_and_repeated_tables_are_refused(warehouse: SqlWarehouse) -> None:
    staged = TableWrite("t", pa.table({"id": [1]}), "replace")  # type: ignore[arg-type]
    with pytest.raises(SinkError, match="replace"):
        commit(warehouse, [staged])
    with pytest.raises(SinkError, match="twice") as info:
        commit(warehouse, [readings(1), readings(2)])
    assert info.value.fields["table"] == "readings"
    assert warehouse.tables() == []


def test_tables_changed_by_another_writer_are_written_on_fresh_lookups(
    open_wh: OpenWarehouse,
) -> None:
    writer, other = open_wh(), open_wh()
    commit(writer, [readings(1), windows(w1=1.0)], state={"n": 1})
    other.query('DROP TABLE "windows"')
    other.query('ALTER TABLE "readings" ADD COLUMN extra BIGINT')

    commit(writer, [readings(2), windows(w2=2.0)], batch_id="b2", state={"n": 2})

    assert rows(writer, "readings", "id, extra") == [
        {"id": 1, "extra": None}, {"id": 2, "extra": None},
    ]  # fmt: skip
    assert rows(writer, "windows", "id, mean") == [{"id": 2, "mean": 2.0}]
    assert writer.read_state("job") == {"n": 2}
