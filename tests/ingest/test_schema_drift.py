"""Schema drift detection (loopline.ingest.schema_drift)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from loopline.ingest.schema_drift import SchemaDrift, detect_drift

STORED = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("_source", pa.string()),
        ("_batch_id", pa.string()),
        ("_ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


def test_new_table_has_no_drift() -> None:
    drift = detect_drift(pa.schema([("id", pa.int64())]), None)
    assert drift == SchemaDrift()
    assert not drift.changed
    assert drift.summary() == "no drift"


def test_same_columns_in_other_arrow_spelling_is_no_drift() -> None:
    batch = pa.schema([("name", pa.large_string()), ("id", pa.int64())])
    assert not detect_drift(batch, STORED).changed


def test_new_missing_and_retyped_columns() -> None:
    batch = pl.Schema({"id": pl.String(), "email": pl.String(), "_extra": pl.Int64()})
    drift = detect_drift(batch, STORED)
    assert drift.new == ["email"]
    assert drift.missing == ["name"]
    assert drift.retyped == {"id": ("Int64", "String")}
    assert drift.changed
    assert "email" in drift.summary()
    assert "stored Int64, batch String" in drift.summary()


def test_lineage_columns_never_drift() -> None:
    batch = pl.Schema({"id": pl.Int64(), "name": pl.String(), "_batch_id": pl.Int64()})
    assert not detect_drift(batch, STORED).changed


def test_untyped_stored_column_is_not_retyped() -> None:
    stored = pa.schema([("notes", pa.null())])
    assert detect_drift(pl.Schema({"notes": pl.String()}), stored).retyped == {}
