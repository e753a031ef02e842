"""The warehouse factory and the shared SQL pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.errors import StoreError
from loopline.store.duckdb_warehouse import DuckDBWarehouse
from loopline.store.sql_names import check_table_name, quote_ident, redact_url
from loopline.store.warehouse import open_warehouse


def test_relative_duckdb_path_is_under_base_dir_with_folders_created(tmp_path: Path) -> None:
    wh = open_warehouse("duckdb:///.loopline/nested/wh.duckdb", base_dir=tmp_path)
    wh.close()

    assert isinstance(wh, DuckDBWarehouse)
    assert (tmp_path / ".loopline" / "nested" / "wh.duckdb").is_file()


def test_absolute_duckdb_path_ignores_base_dir(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "wh.duckdb"

    open_warehouse(f"duckdb:///{target}", base_dir=tmp_path / "elsewhere").close()

    assert target.is_file()
    assert not (tmp_path / "elsewhere").exists()


def test_in_memory_duckdb_writes_no_file(tmp_path: Path) -> None:
    wh = open_warehouse("duckdb:///:memory:", base_dir=tmp_path)
    try:
        assert isinstance(wh, DuckDBWarehouse)
        assert wh.tables() == []
    finally:
        wh.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.services
def test_postgresql_urls_open_the_postgres_warehouse(postgres_url: str, tmp_path: Path) -> None:
    from loopline.store.postgres_warehouse import PostgresWarehouse

    wh = open_warehouse(postgres_url, base_dir=tmp_path)
    try:
        assert isinstance(wh, PostgresWarehouse)
    finally:
        wh.close()


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db", "mysql://root:pw@host/db", "duckdb:///", "warehouse.duckdb"]
)
def test_unsupported_url_is_a_store_error_with_a_hint(url: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        open_warehouse(url, base_dir=tmp_path)

    assert "duckdb:///" in (info.value.hint or "")
    assert "pw" not in str(info.value)


def test_quote_ident_doubles_embedded_quotes() -> None:
    assert quote_ident('a"b') == '"a""b"'
    assert quote_ident("") == '""'


@pytest.mark.parametrize("name", ["", "a\x00b"])
def test_check_table_name_rejects_empty_and_nul(name: str) -> None:
    with pytest.raises(StoreError, match="invalid table name") as info:
        check_table_name(name)

    assert info.value.hint


def test_redact_url_keeps_urls_without_a_password() -> None:
    url = "postgresql://bob@db:5432/x?options=-csearch_path%3Ds"

    assert redact_url(url) == url
    assert redact_url("postgresql://bob:pw@db/x") == "postgresql://bob:***@db/x"
