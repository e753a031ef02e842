"""ParquetLake: Delta tables with atomic, idempotent batch commits."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from loopline.errors import StoreError
from loopline.store.destination import QUARANTINE_TABLE, Destination
from loopline.store.lake import STAGING_DIR, ParquetLake


def commit(
    lake: ParquetLake,
    data: pa.Table,
    *,
    batch_id: str,
    table: str = "orders",
    mode: Any = "append",
    key: tuple[str, ...] = (),
    state: dict[str, Any] | None = None,
    quarantine: pa.Table | None = None,
) -> int:
    return lake.commit_batch(
        table=table,
        data=data,
        mode=mode,
        key=list(key),
        quarantine=quarantine,
        job="job1",
        batch_id=batch_id,
        state=state,
    )


def rows(lake: ParquetLake, table: str = "orders", by: str = "id") -> list[dict[str, Any]]:
    result = lake.read_table(table).sort_by(by).to_pylist()
    return [{k: v for k, v in r.items() if k != "_batch_id"} for r in result]


@pytest.fixture
def lake(tmp_path: Path) -> ParquetLake:
    return ParquetLake("lake", base_dir=tmp_path)


def test_lake_satisfies_the_destination_protocol(lake: ParquetLake) -> None:
    destination: Destination = lake
    assert destination.table_schema("orders") is None


def test_relative_url_resolves_under_base_dir(tmp_path: Path, lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1]}), batch_id="b1")
    assert (tmp_path / "lake" / "orders" / "_delta_log").is_dir()


def test_file_url_is_a_local_folder(tmp_path: Path) -> None:
    lake = ParquetLake((tmp_path / "x").as_uri(), base_dir=Path("/nonexistent"))
    commit(lake, pa.table({"id": [1]}), batch_id="b1")
    assert DeltaTable(str(tmp_path / "x" / "orders")).to_pyarrow_table().num_rows == 1


def test_append_returns_rows_and_reads_back(lake: ParquetLake) -> None:
    assert commit(lake, pa.table({"id": [1, 2], "v": ["a", "b"]}), batch_id="b1") == 2
    assert commit(lake, pa.table({"id": [3], "v": ["c"]}), batch_id="b2") == 1
    assert rows(lake) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]


def test_recommitting_a_batch_replaces_instead_of_duplicating(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1, 2]}), batch_id="b1")
    commit(lake, pa.table({"id": [3]}), batch_id="b2")
    commit(lake, pa.table({"id": [1, 2]}), batch_id="b1")
    assert [r["id"] for r in rows(lake)] == [1, 2, 3]


def test_batch_id_column_is_set_from_the_argument(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1], "_batch_id": ["stale"]}), batch_id="b'1")
    assert lake.read_table("orders").column("_batch_id").to_pylist() == ["b'1"]


def test_new_columns_are_added_with_nulls_for_older_rows(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1], "v": ["a"]}), batch_id="b1")
    commit(lake, pa.table({"id": [2], "w": [2.5]}), batch_id="b2")
    assert rows(lake) == [{"id": 1, "v": "a", "w": None}, {"id": 2, "v": None, "w": 2.5}]
    schema = lake.table_schema("orders")
    assert schema is not None
    assert set(schema.names) == {"id", "v", "w", "_batch_id"}


def test_retyped_column_is_a_store_error(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1]}), batch_id="b1")
    with pytest.raises(StoreError) as info:
        commit(lake, pa.table({"id": pa.array([{"x": 1}])}), batch_id="b2")
    assert info.value.fields["table"] == "orders"
    assert info.value.hint


def test_merge_upserts_by_key(lake: ParquetLake) -> None:
    commit(
        lake, pa.table({"id": [1, 2], "v": ["a", "b"]}), batch_id="b1", mode="merge", key=("id",)
    )
    commit(
        lake, pa.table({"id": [2, 3], "v": ["B", "c"]}), batch_id="b2", mode="merge", key=("id",)
    )
    commit(
        lake, pa.table({"id": [2, 3], "v": ["B", "c"]}), batch_id="b2", mode="merge", key=("id",)
    )
    assert rows(lake) == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]


def test_merge_matches_null_keys_and_keeps_the_last_duplicate(lake: ParquetLake) -> None:
    first = pa.table({"id": pa.array([None, 1], pa.int64()), "v": ["n", "a"]})
    commit(lake, first, batch_id="b1", mode="merge", key=("id",))
    again = pa.table({"id": pa.array([None, 1, 1], pa.int64()), "v": ["N", "x", "y"]})
    commit(lake, again, batch_id="b2", mode="merge", key=("id",))
    got = {r["id"]: r["v"] for r in lake.read_table("orders").to_pylist()}
    assert got == {None: "N", 1: "y"}


def test_merge_with_a_new_column(lake: ParquetLake) -> None:
    commit(
        lake, pa.table({"id": [1, 2], "v": ["a", "b"]}), batch_id="b1", mode="merge", key=("id",)
    )
    commit(lake, pa.table({"id": [2], "w": [7]}), batch_id="b2", mode="merge", key=("id",))
    assert rows(lake) == [{"id": 1, "v": "a", "w": None}, {"id": 2, "v": "b", "w": 7}]


def test_merge_without_key_column_in_batch_is_a_store_error(lake: ParquetLake) -> None:
    with pytest.raises(StoreError, match="key") as info:
        commit(lake, pa.table({"v": [1]}), batch_id="b1", mode="merge", key=("id",))
    assert info.value.fields["column"] == "id"


def test_replace_swaps_at_finish_and_holds_state_until_then(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1, 2]}), batch_id="old", state={"n": 1})
    commit(lake, pa.table({"id": [10]}), batch_id="r1", mode="replace", state={"n": 2})
    commit(
        lake, pa.table({"id": [11], "x": ["new"]}), batch_id="r2", mode="replace", state={"n": 3}
    )
    assert [r["id"] for r in rows(lake)] == [1, 2]  # readers still see the old table
    assert lake.read_state("job1") == {"n": 1}
    lake.finish_replace(table="orders", job="job1")
    assert rows(lake) == [{"id": 10, "x": None}, {"id": 11, "x": "new"}]
    assert lake.read_state("job1") == {"n": 3}
    assert not (Path(lake.root) / STAGING_DIR / "orders").exists()


def test_replace_after_a_crashed_replace_does_not_swap_in_its_stale_batches(
    tmp_path: Path,
) -> None:
    crashed = ParquetLake("lake", base_dir=tmp_path)
    commit(crashed, pa.table({"id": [1]}), batch_id="old")
    commit(crashed, pa.table({"id": [99]}), batch_id="stale", mode="replace")
    rerun = ParquetLake("lake", base_dir=tmp_path)  # the process died before finish_replace
    commit(rerun, pa.table({"id": [10]}), batch_id="fresh", mode="replace")
    rerun.finish_replace(table="orders", job="job1")
    assert [r["id"] for r in rows(rerun)] == [10]


def test_replace_with_no_batches_empties_the_table(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1, 2]}), batch_id="old")
    lake.finish_replace(table="orders", job="job1")
    assert lake.read_table("orders").num_rows == 0


def test_partition_by_writes_hive_folders(tmp_path: Path) -> None:
    lake = ParquetLake("lake", base_dir=tmp_path, partition_by=["day"])
    data = pa.table({"id": [1, 2, 3], "day": ["d1", "d2", "d1"]})
    commit(lake, data, batch_id="b1")
    commit(lake, data, batch_id="b1")
    folders = sorted(p.name for p in (tmp_path / "lake" / "orders").glob("day=*"))
    assert folders == ["day=d1", "day=d2"]
    assert sorted(lake.read_table("orders").column("id").to_pylist()) == [1, 2, 3]


def test_partition_column_missing_is_a_store_error(tmp_path: Path) -> None:
    lake = ParquetLake("lake", base_dir=tmp_path, partition_by=["day"])
    with pytest.raises(StoreError, match="partition_by"):
        commit(lake, pa.table({"id": [1]}), batch_id="b1")


def test_quarantine_rows_go_to_the_quarantine_table_once(lake: ParquetLake) -> None:
    bad = pa.table({"_rule": ["not_null:v"], "_raw_value": [None], "_batch_id": ["b1"]})
    commit(lake, pa.table({"id": [1]}), batch_id="b1", quarantine=bad)
    commit(lake, pa.table({"id": [1]}), batch_id="b1", quarantine=bad)
    stored = lake.read_table(QUARANTINE_TABLE)
    assert stored.column("_rule").to_pylist() == ["not_null:v"]


def test_state_round_trips_and_none_keeps_the_last(lake: ParquetLake) -> None:
    assert lake.read_state("job1") is None
    commit(lake, pa.table({"id": [1]}), batch_id="b1", state={"files": ["a.csv"], "n": 1})
    commit(lake, pa.table({"id": [2]}), batch_id="b2", state=None)
    fresh = ParquetLake(lake.root, base_dir=Path("/"))
    assert fresh.read_state("job1") == {"files": ["a.csv"], "n": 1}


def test_state_is_recovered_from_the_data_commit_after_a_crash(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1]}), batch_id="b1", state={"n": 1})
    # The process dies after the data commit, before the state index is updated.
    lake._commit_data(
        table="orders",
        data=pa.table({"id": [2], "_batch_id": ["b2"]}),
        mode="append",
        key=[],
        job="job1",
        batch_id="b2",
        state={"n": 2},
    )
    root = lake.root
    del lake
    fresh = ParquetLake(root, base_dir=Path("/"))
    assert fresh.read_state("job1") == {"n": 2}
    assert [r["id"] for r in rows(fresh)] == [1, 2]


def test_uncommitted_files_from_a_crashed_batch_are_invisible(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1]}), batch_id="b1")
    folder = Path(lake.root) / "orders"
    # A writer died after writing its data file, before the commit.
    pq.write_table(pa.table({"id": [2, 3], "_batch_id": ["b2", "b2"]}), folder / "part-x.parquet")
    (folder / "_delta_log" / "_commit_tmp.json.tmp").write_text("{partial")
    fresh = ParquetLake(lake.root, base_dir=Path("/"))
    assert [r["id"] for r in rows(fresh)] == [1]
    commit(fresh, pa.table({"id": [2, 3]}), batch_id="b2")
    assert [r["id"] for r in rows(fresh)] == [1, 2, 3]


def test_lake_types_round_trip(lake: ParquetLake) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    data = pa.table(
        {
            "id": [1],
            "at": pa.array([when], pa.timestamp("us", "UTC")),
            "name": pa.array(["x"], pa.large_string()),
            "price": pa.array([1.5], pa.float64()),
        }
    )
    commit(lake, data, batch_id="b1")
    assert rows(lake) == [{"id": 1, "at": when, "name": "x", "price": 1.5}]


def test_reading_a_missing_table_is_a_store_error(lake: ParquetLake) -> None:
    with pytest.raises(StoreError, match="does not exist") as info:
        lake.read_table("nope")
    assert info.value.fields["table"] == "nope"


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden"])
def test_unsafe_table_names_are_rejected(lake: ParquetLake, name: str) -> None:
    with pytest.raises(StoreError, match="invalid lake table name"):
        commit(lake, pa.table({"id": [1]}), batch_id="b1", table=name)


def test_unsupported_url_scheme_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="ftp") as info:
        ParquetLake("ftp://host/lake", base_dir=tmp_path)
    assert "s3" in (info.value.hint or "")


def test_state_is_stored_as_json_in_the_commit(lake: ParquetLake) -> None:
    commit(lake, pa.table({"id": [1]}), batch_id="b1", state={"cursor": 5})
    history = DeltaTable(str(Path(lake.root) / "orders")).history(1)
    assert json.loads(history[0]["loopline.state.job1"]) == {"cursor": 5}


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict[str, str]]:
    """A moto S3 server in its own process (delta-rs holds the GIL while it waits)."""
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("moto[server] is not installed (dev dependency)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_lake(s3_options: dict[str, str], tmp_path: Path) -> ParquetLake:
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=s3_options["AWS_ENDPOINT_URL"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return ParquetLake(f"s3://{bucket}/prefix/", base_dir=tmp_path, storage_options=s3_options)


def test_s3_append_is_idempotent_and_reads_back(s3_lake: ParquetLake) -> None:
    commit(s3_lake, pa.table({"id": [1, 2]}), batch_id="b1", state={"n": 1})
    commit(s3_lake, pa.table({"id": [1, 2]}), batch_id="b1", state={"n": 1})
    commit(s3_lake, pa.table({"id": [3], "v": ["x"]}), batch_id="b2", state={"n": 2})
    assert rows(s3_lake) == [{"id": 1, "v": None}, {"id": 2, "v": None}, {"id": 3, "v": "x"}]
    assert s3_lake.read_state("job1") == {"n": 2}


def test_s3_replace_swaps_and_removes_staging(s3_lake: ParquetLake) -> None:
    commit(s3_lake, pa.table({"id": [1]}), batch_id="old")
    commit(s3_lake, pa.table({"id": [5]}), batch_id="r1", mode="replace", state={"n": 9})
    s3_lake.finish_replace(table="orders", job="job1")
    assert [r["id"] for r in rows(s3_lake)] == [5]
    assert s3_lake.read_state("job1") == {"n": 9}
    staging = f"{s3_lake.root}/{STAGING_DIR}/orders"
    assert not DeltaTable.is_deltatable(staging, storage_options=s3_lake.storage_options)
