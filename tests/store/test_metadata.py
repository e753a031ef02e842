"""MetadataStore: the metadata database on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from loopline.errors import StoreError
from loopline.store.metadata import MetadataStore, ingest_runs

COLUMNS = {
    "run_id", "job", "source", "destination", "started_at", "ended_at", "status",
    "rows_read", "rows_written", "rows_quarantined", "rows_deduplicated", "rule_failures",
    "warnings", "state_before", "state_after", "schema_hash", "error",
}  # fmt: skip


def run_row(run_id: str, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "run_id": run_id,
        "job": "orders",
        "source": "file:orders",
        "destination": "lake:orders",
        "started_at": datetime(2025, 1, 1, tzinfo=UTC),
        "status": "running",
        "rule_failures": {"not_null:id": 2},
        "warnings": {},
        "state_before": {"files": ["a.csv"], "nested": {"n": 1}},
    }
    return row | extra


def test_sqlite_path_is_relative_to_base_dir_and_created(tmp_path: Path) -> None:
    store = MetadataStore("sqlite:///deep/er/metadata.db", base_dir=tmp_path)
    try:
        assert (tmp_path / "deep" / "er" / "metadata.db").is_file()
        assert set(sa.inspect(store.engine).get_table_names()) >= {"ingest_runs"}
    finally:
        store.close()


def test_sqlite_uses_the_wal_journal(tmp_path: Path) -> None:
    store = MetadataStore("sqlite:///m.db", base_dir=tmp_path)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        store.close()


def test_ingest_runs_has_the_ledger_columns(tmp_path: Path) -> None:
    store = MetadataStore("sqlite:///m.db", base_dir=tmp_path)
    try:
        found = {c["name"] for c in sa.inspect(store.engine).get_columns("ingest_runs")}
        assert found == COLUMNS
    finally:
        store.close()


def test_reopening_keeps_the_rows(tmp_path: Path) -> None:
    store = MetadataStore("sqlite:///m.db", base_dir=tmp_path)
    with store.engine.begin() as conn:
        conn.execute(ingest_runs.insert().values(**run_row("r1")))
    store.close()
    again = MetadataStore("sqlite:///m.db", base_dir=tmp_path)
    try:
        with again.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(ingest_runs)).scalar() == 1
    finally:
        again.close()


def test_unknown_status_is_rejected_by_the_database(tmp_path: Path) -> None:
    store = MetadataStore("sqlite:///m.db", base_dir=tmp_path)
    try:
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
            conn.execute(ingest_runs.insert().values(**run_row("r1", status="done")))
    finally:
        store.close()


def test_invalid_url_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid metadata database URL") as info:
        MetadataStore("not a url", base_dir=tmp_path)
    assert "sqlite:///" in (info.value.hint or "")


def test_unreachable_server_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the metadata database") as info:
        MetadataStore("postgresql://nobody@127.0.0.1:1/none", base_dir=tmp_path)
    assert info.value.hint


@pytest.mark.services
def test_postgres_url_maps_to_psycopg_and_json_round_trips(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    store = MetadataStore(plain, base_dir=Path("/"))
    try:
        assert store.engine.dialect.driver == "psycopg"
        with store.engine.begin() as conn:
            conn.execute(ingest_runs.insert().values(**run_row("r1")))
        with store.engine.connect() as conn:
            row = conn.execute(sa.select(ingest_runs)).mappings().one()
        assert row["state_before"] == {"files": ["a.csv"], "nested": {"n": 1}}
        assert row["rule_failures"] == {"not_null:id": 2}
        assert row["started_at"] == datetime(2025, 1, 1, tzinfo=UTC)
    finally:
        store.close()


@pytest.mark.services
def test_json_columns_are_jsonb_on_postgres_and_json_on_sqlite(
    postgres_url: str, tmp_path: Path
) -> None:
    json_columns = {"rule_failures", "warnings", "state_before", "state_after"}
    for url, expected in ((postgres_url, "JSONB"), ("sqlite:///m.db", "JSON")):
        store = MetadataStore(url, base_dir=tmp_path)
        try:
            columns = sa.inspect(store.engine).get_columns("ingest_runs")
            found = {c["name"]: type(c["type"]).__name__ for c in columns}
            assert {found[c] for c in json_columns} == {expected}
        finally:
            store.close()
