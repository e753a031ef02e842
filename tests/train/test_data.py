"""The training frame from a warehouse table, a query or a file, with its lineage."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from loopline import lineage
from loopline.config import LooplineConfig, TrainJobConfig
from loopline.errors import TrainError
from loopline.store.warehouse import open_warehouse
from loopline.train.data import content_hash, load_training_frame

ROWS = pa.table(
    {
        "tenure": [1, 5, 9, 14, 30, 2],
        "plan": ["a", "b", "a", None, "c", "b"],
        "charges": [10.5, 20.0, None, 31.25, 99.0, 12.0],
        "churn": ["Yes", "No", "No", "No", "Yes", "No"],
    }
)


@pytest.fixture
def project(tmp_path: Path) -> LooplineConfig:
    """A project whose warehouse holds ``customers``: two ingested batches of ROWS."""
    config = LooplineConfig(project="t", project_dir=tmp_path)
    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=tmp_path)
    try:
        for batch, part in (("batch-b", ROWS.slice(0, 4)), ("batch-a", ROWS.slice(4))):
            warehouse.commit_batch(
                table="customers",
                data=part,
                mode="append",
                key=[],
                quarantine=None,
                job="load",
                batch_id=batch,
                state=None,
            )
    finally:
        warehouse.close()
    return config


def job(**source: str) -> TrainJobConfig:
    return TrainJobConfig.model_validate({**source, "target": "churn"})


def test_a_table_gives_its_rows_without_lineage_columns_and_its_batches(
    project: LooplineConfig,
) -> None:
    data = load_training_frame(project, job(table="customers"))
    assert data.source == "table:customers"
    assert data.rows == 6
    assert len(data.frame) == 6
    assert list(data.frame.columns) == ["tenure", "plan", "charges", "churn"]
    assert not set(lineage.COLUMNS) & set(data.frame.columns)
    assert data.batch_ids == ["batch-a", "batch-b"]
    assert data.frame["churn"].tolist() == ROWS["churn"].to_pylist()


def test_the_content_hash_depends_on_the_data_only(project: LooplineConfig) -> None:
    """Same values from the warehouse (with lineage, other batch ids) or a Parquet file:
    same hash; one value changed: another hash."""
    from_table = load_training_frame(project, job(table="customers"))
    pl.from_arrow(ROWS).write_parquet(project.project_dir / "rows.parquet")  # type: ignore[union-attr]
    from_file = load_training_frame(project, job(file="rows.parquet"))
    assert from_file.batch_ids == []
    assert from_table.content_hash == from_file.content_hash == content_hash(ROWS)
    changed = ROWS.set_column(0, "tenure", pa.array([1, 5, 9, 14, 30, 3]))
    assert content_hash(changed) != content_hash(ROWS)
    assert len(from_table.content_hash) == 64


def test_a_query_reads_what_it_selects(project: LooplineConfig) -> None:
    data = load_training_frame(project, job(query="SELECT * FROM customers WHERE tenure > 4"))
    assert data.rows == 4
    assert sorted(data.frame["tenure"].tolist()) == [5, 9, 14, 30]
    assert data.source.startswith("query:SELECT")


def test_a_failing_query_is_a_train_error(project: LooplineConfig) -> None:
    with pytest.raises(TrainError, match="training query failed") as info:
        load_training_frame(project, job(query="SELECT nope FROM customers"))
    assert info.value.hint


def test_an_unknown_table_lists_the_warehouse_tables(project: LooplineConfig) -> None:
    with pytest.raises(TrainError) as info:
        load_training_frame(project, job(table="custmers"))
    assert "tables: customers" in str(info.value)
    assert info.value.fields["table"] == "custmers"
    assert "_ll_" not in str(info.value)


def test_a_csv_file_is_read_relative_to_the_project(project: LooplineConfig) -> None:
    (project.project_dir / "data").mkdir()
    pl.from_arrow(ROWS).write_csv(project.project_dir / "data" / "rows.csv")  # type: ignore[union-attr]
    data = load_training_frame(project, job(file="data/rows.csv"))
    assert data.rows == 6
    assert data.frame["charges"].isna().sum() == 1
    assert data.source == "file:data/rows.csv"


def test_a_missing_or_unreadable_file_is_a_train_error(project: LooplineConfig) -> None:
    with pytest.raises(TrainError, match="does not exist"):
        load_training_frame(project, job(file="missing.csv"))
    (project.project_dir / "rows.xlsx").write_text("x")
    with pytest.raises(TrainError, match=r"cannot read a \.xlsx file"):
        load_training_frame(project, job(file="rows.xlsx"))
    (project.project_dir / "bad.parquet").write_text("not parquet")
    with pytest.raises(TrainError, match="cannot read the training file"):
        load_training_frame(project, job(file="bad.parquet"))
