"""Behaviour every warehouse engine shares (each test runs on DuckDB and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from loopline.errors import SinkError, StoreError
from loopline.store.destination import QUARANTINE_TABLE, STATE_TABLE, WriteMode
from loopline.store.warehouse import SqlWarehouse

OpenWarehouse = Callable[[], SqlWarehouse]


def commit(
    wh: SqlWarehouse,
    data: pa.Table,
    *,
    table: str = "orders",
    mode: WriteMode = "append",
    key: Sequence[str] = (),
    quarantine: pa.Table | None = None,
    job: str = "job",
    batch_id: str = "b1",
    state: dict[str, Any] | None = None,
    new_batch: bool = False,
) -> int:
    return wh.commit_batch(
        table=table,
        data=data,
        mode=mode,
        key=key,
        quarantine=quarantine,
        job=job,
        batch_id=batch_id,
        state=state,
        new_batch=new_batch,
    )


def rows(wh: SqlWarehouse, table: str = "orders", columns: str = "id, v") -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = wh.query(
        f'SELECT {columns} FROM "{table}" ORDER BY id'
    ).to_pylist()
    return result


def quarantine_rows(batch_id: str, rule: str = "not_null:v", n: int = 1) -> pa.Table:
    return pa.table(
        {
            "_rule": [rule] * n,
            "_column": ["v"] * n,
            "_raw_value": [None] * n,
            "_record": ['{"id": 9}'] * n,
            "_source": ["file:a.csv"] * n,
            "_batch_id": [batch_id] * n,
            "_ingested_at": pa.array(
                [datetime(2024, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", "UTC")
            ),
        }
    )


def test_append_creates_the_table_and_returns_rows_written(warehouse: SqlWarehouse) -> None:
    written = commit(warehouse, pa.table({"id": [1, 2], "v": ["a", "b"]}))

    assert written == 2
    assert "orders" in warehouse.tables()
    assert rows(warehouse) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]


def test_batch_id_column_is_set_from_the_argument(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1], "_batch_id": ["stale"]}), batch_id="b7")

    assert warehouse.read_table("orders").column("_batch_id").to_pylist() == ["b7"]


def test_recommitting_a_batch_does_not_duplicate(warehouse: SqlWarehouse) -> None:
    batch = pa.table({"id": [1, 2], "v": ["a", "b"]})
    commit(warehouse, batch, batch_id="b1")
    commit(warehouse, pa.table({"id": [3], "v": ["c"]}), batch_id="b2")
    commit(warehouse, batch, batch_id="b1")

    assert [r["id"] for r in rows(warehouse)] == [1, 2, 3]


def test_a_new_batch_is_appended_without_looking_for_earlier_rows_of_its_id(
    warehouse: SqlWarehouse,
) -> None:
    batch = pa.table({"id": [1, 2], "v": ["a", "b"]})
    commit(warehouse, batch, batch_id="b1", new_batch=True)
    # The caller's promise (a fresh id) is what keeps this from doubling: a second
    # new_batch commit of the same id is not looked for, a plain re-commit replaces it.
    commit(warehouse, batch, batch_id="b1", new_batch=True)
    assert [r["id"] for r in rows(warehouse)] == [1, 1, 2, 2]

    commit(warehouse, batch, batch_id="b1")
    assert [r["id"] for r in rows(warehouse)] == [1, 2]


def test_recommitting_an_empty_batch_removes_its_earlier_rows(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1]}), batch_id="b1")
    commit(warehouse, pa.table({"id": pa.array([], pa.int64())}), batch_id="b1")

    assert warehouse.read_table("orders").num_rows == 0


def test_merge_updates_existing_keys_and_inserts_new_ones(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1, 2], "v": ["a", "b"]}), mode="merge", key=["id"])
    commit(
        warehouse,
        pa.table({"id": [2, 3], "v": ["B", "c"]}),
        mode="merge",
        key=["id"],
        batch_id="b2",
    )

    assert rows(warehouse) == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]


def test_merge_keeps_the_last_row_of_a_repeated_key(warehouse: SqlWarehouse) -> None:
    written = commit(
        warehouse, pa.table({"id": [1, 1, 2], "v": ["x", "y", "z"]}), mode="merge", key=["id"]
    )

    assert written == 2
    assert rows(warehouse) == [{"id": 1, "v": "y"}, {"id": 2, "v": "z"}]


def test_merge_on_a_composite_key(warehouse: SqlWarehouse) -> None:
    first = pa.table({"id": [1, 1], "k2": ["a", "b"], "v": ["1a", "1b"]})
    commit(warehouse, first, mode="merge", key=["id", "k2"])
    commit(
        warehouse,
        pa.table({"id": [1], "k2": ["b"], "v": ["new"]}),
        mode="merge",
        key=["id", "k2"],
        batch_id="b2",
    )

    assert warehouse.query("SELECT v FROM orders ORDER BY k2").column(0).to_pylist() == [
        "1a",
        "new",
    ]


def test_merge_without_the_key_column_is_a_sink_error(warehouse: SqlWarehouse) -> None:
    with pytest.raises(SinkError, match="key") as info:
        commit(warehouse, pa.table({"v": ["a"]}), mode="merge", key=["id"])

    assert info.value.fields["missing"] == ["id"]


def test_replace_swaps_the_staged_table_in_at_finish(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1, 2], "v": ["old", "old"]}), state={"run": 1})
    commit(
        warehouse,
        pa.table({"id": [7], "v": ["new"]}),
        mode="replace",
        batch_id="r1",
        state={"run": 2},
    )
    commit(warehouse, pa.table({"id": [8], "v": ["new"]}), mode="replace", batch_id="r2")

    assert [r["id"] for r in rows(warehouse)] == [1, 2]  # old table still served
    assert "_stage_orders" in warehouse.tables()
    assert warehouse.read_state("job") == {"run": 1}  # state held until the swap

    warehouse.finish_replace(table="orders", job="job")

    assert rows(warehouse) == [{"id": 7, "v": "new"}, {"id": 8, "v": "new"}]
    assert "_stage_orders" not in warehouse.tables()
    assert warehouse.read_state("job") == {"run": 2}


def test_crash_before_finish_replace_leaves_the_old_table(open_wh: OpenWarehouse) -> None:
    first = open_wh()
    commit(first, pa.table({"id": [1], "v": ["old"]}), state={"run": 1})
    commit(first, pa.table({"id": [5], "v": ["lost"]}), mode="replace", state={"run": 2})
    first.close()  # the process dies before finish_replace

    second = open_wh()
    assert rows(second) == [{"id": 1, "v": "old"}]
    assert second.read_state("job") == {"run": 1}

    commit(second, pa.table({"id": [6], "v": ["new"]}), mode="replace", batch_id="r9")
    second.finish_replace(table="orders", job="job")

    assert rows(second) == [{"id": 6, "v": "new"}]  # the crashed run's staged row is gone


def test_replace_with_no_batch_empties_the_table(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1], "v": ["old"]}))

    warehouse.finish_replace(table="orders", job="job")

    assert rows(warehouse) == []


def test_new_column_is_added_and_older_rows_get_null(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1], "v": ["a"]}))
    commit(warehouse, pa.table({"id": [2], "v": ["b"], "extra": [2.5]}), batch_id="b2")

    schema = warehouse.table_schema("orders")
    assert schema is not None
    assert schema.field("extra").type == pa.float64()
    assert rows(warehouse, columns="id, extra") == [
        {"id": 1, "extra": None},
        {"id": 2, "extra": 2.5},
    ]


def test_columns_missing_from_the_batch_get_null(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1], "v": ["a"]}))
    commit(warehouse, pa.table({"id": [2]}), batch_id="b2")

    assert rows(warehouse) == [{"id": 1, "v": "a"}, {"id": 2, "v": None}]


def test_state_round_trips_and_is_none_for_an_unknown_job(warehouse: SqlWarehouse) -> None:
    assert warehouse.read_state("job") is None
    state = {"files": ["a.csv", "b.csv"], "cursor": {"id": 41, "ts": "2024-01-01"}, "n": 1.5}

    commit(warehouse, pa.table({"id": [1]}), state=state)
    commit(warehouse, pa.table({"id": [2]}), batch_id="b2", state=None)  # state unchanged

    assert warehouse.read_state("job") == state
    assert warehouse.read_state("other") is None
    assert warehouse.query(f'SELECT batch_id FROM "{STATE_TABLE}"').column(0).to_pylist() == ["b1"]


def test_failed_batch_leaves_table_schema_and_state_as_before(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1], "v": ["a"]}), state={"offset": 1})
    commit(warehouse, pa.table({"id": [9]}), quarantine=quarantine_rows("b0"), batch_id="b0")
    before = warehouse.read_table("orders")
    quarantined_before = warehouse.read_table(QUARANTINE_TABLE)
    bad_quarantine = quarantine_rows("b2").set_column(6, "_ingested_at", pa.array(["not a time"]))

    with pytest.raises(SinkError) as info:  # the data part succeeds, the quarantine part fails
        commit(
            warehouse,
            pa.table({"id": [2], "v": ["b"], "new_col": [True]}),
            quarantine=bad_quarantine,
            batch_id="b2",
            state={"offset": 2},
        )

    assert info.value.fields["table"] == "orders"
    assert info.value.hint
    assert isinstance(info.value.__cause__, Exception)
    assert warehouse.read_state("job") == {"offset": 1}
    after = warehouse.read_table("orders")
    assert after.schema.names == before.schema.names  # the ALTER TABLE was rolled back too
    assert after.sort_by("id").to_pylist() == [
        {"id": 1, "v": "a", "_batch_id": "b1"},
        {"id": 9, "v": None, "_batch_id": "b0"},
    ]
    assert warehouse.read_table(QUARANTINE_TABLE).equals(quarantined_before)
    commit(warehouse, pa.table({"id": [3]}), batch_id="b3")  # the connection still works


def test_type_conflict_is_a_sink_error_with_table_url_and_hint(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1]}))

    with pytest.raises(SinkError) as info:
        commit(warehouse, pa.table({"id": ["not a number"]}), batch_id="b2")

    assert info.value.fields["table"] == "orders"
    assert info.value.fields["url"] == warehouse.url
    assert "type" in (info.value.hint or "")
    assert warehouse.read_table("orders").column("id").to_pylist() == [1]


def test_quarantine_rows_are_written_with_their_batch(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1]}), quarantine=quarantine_rows("b1", n=2))
    commit(warehouse, pa.table({"id": [1]}), quarantine=quarantine_rows("b1", n=2))  # re-run
    commit(warehouse, pa.table({"id": [2]}), quarantine=quarantine_rows("b2"), batch_id="b2")

    stored = warehouse.read_table(QUARANTINE_TABLE)
    assert sorted(stored.column("_batch_id").to_pylist()) == ["b1", "b1", "b2"]
    assert stored.schema.field("_ingested_at").type == pa.timestamp("us", "UTC")
    assert stored.column("_record").to_pylist()[0] == '{"id": 9}'


def test_recommit_without_quarantine_removes_that_batchs_quarantine(
    warehouse: SqlWarehouse,
) -> None:
    commit(warehouse, pa.table({"id": [1]}), quarantine=quarantine_rows("b1"))
    commit(warehouse, pa.table({"id": [1]}), quarantine=None)

    assert warehouse.read_table(QUARANTINE_TABLE).num_rows == 0


def test_identifiers_are_quoted_and_values_bound(warehouse: SqlWarehouse) -> None:
    table = 'odd "name"; drop'
    data = pa.table({'col "x"': [1], "Mixed Case": ["it's"]})

    commit(warehouse, data, table=table, job="o'brien", batch_id="b'1", state={"q": "'"})

    assert warehouse.read_table(table).select(['col "x"', "Mixed Case"]).equals(data)
    assert warehouse.read_state("o'brien") == {"q": "'"}


@pytest.mark.parametrize("name", ["", "bad\x00name"])
def test_invalid_table_name_is_a_store_error(warehouse: SqlWarehouse, name: str) -> None:
    with pytest.raises(StoreError, match="invalid table name"):
        commit(warehouse, pa.table({"id": [1]}), table=name)


def test_table_schema_of_a_missing_table_is_none(warehouse: SqlWarehouse) -> None:
    assert warehouse.table_schema("nope") is None


def test_query_binds_positional_parameters(warehouse: SqlWarehouse) -> None:
    commit(warehouse, pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}))

    result = warehouse.query("SELECT v FROM orders WHERE id >= $1 AND v <> $2", [2, "c"])

    assert result.column("v").to_pylist() == ["b"]


def test_bad_query_is_a_store_error(warehouse: SqlWarehouse) -> None:
    with pytest.raises(StoreError, match="query failed"):
        warehouse.query("SELECT * FROM no_such_table")


def test_large_append_goes_through_the_bulk_path(warehouse: SqlWarehouse) -> None:
    n = 200_000
    data = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "v": pa.array(["x" * 8] * n),
            "amount": pa.array([0.5] * n),
        }
    )

    assert commit(warehouse, data) == n

    total = warehouse.query("SELECT count(*) AS n, sum(id) AS s, sum(amount) AS a FROM orders")
    assert total.to_pylist() == [{"n": n, "s": n * (n - 1) // 2, "a": n * 0.5}]


def test_a_table_changed_by_another_writer_between_commits_is_written(
    open_wh: OpenWarehouse,
) -> None:
    # The writer remembers its tables' columns; another writer's changes make its next
    # commit fail once, and it runs again on fresh lookups.
    writer, other = open_wh(), open_wh()
    commit(writer, pa.table({"id": [1], "v": ["a"]}), state={"n": 1})
    commit(other, pa.table({"id": [2], "v": ["b"], "extra": [7]}), batch_id="o1", job="other")
    commit(writer, pa.table({"id": [3], "v": ["c"], "extra": [8]}), batch_id="b2", state={"n": 2})
    assert rows(writer, columns="id, extra") == [
        {"id": 1, "extra": None}, {"id": 2, "extra": 7}, {"id": 3, "extra": 8},
    ]  # fmt: skip
    other.query('DROP TABLE "orders"')
    commit(writer, pa.table({"id": [4], "v": ["d"]}), batch_id="b3", state={"n": 3})
    assert rows(writer) == [{"id": 4, "v": "d"}]
    assert writer.read_state("job") == {"n": 3}


def test_a_few_merge_rows_with_unique_keys_are_all_written(warehouse: SqlWarehouse) -> None:
    data = pa.table({"id": [1, 2, 3], "k": ["a", "a", "b"], "v": ["x", "y", "z"]})
    assert commit(warehouse, data, mode="merge", key=["id", "k"]) == 3
    again = pa.table({"id": [1, 1], "k": ["a", "a"], "v": ["p", "q"]})
    assert commit(warehouse, again, mode="merge", key=["id", "k"], batch_id="b2") == 1
    assert rows(warehouse) == [
        {"id": 1, "v": "q"}, {"id": 2, "v": "y"}, {"id": 3, "v": "z"},
    ]  # fmt: skip
