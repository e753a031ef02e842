"""Warehouse fixtures: every conformance test runs on DuckDB and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopline.store.warehouse import SqlWarehouse, open_warehouse

OpenWarehouse = Callable[[], SqlWarehouse]


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.services)])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    """A fresh warehouse URL: a DuckDB file under tmp_path, or a per-test PostgreSQL schema."""
    if request.param == "duckdb":
        return "duckdb:///wh/warehouse.duckdb"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def open_wh(warehouse_url: str, tmp_path: Path) -> Iterator[OpenWarehouse]:
    """Opens instances on the same warehouse (a new one stands in for a restarted process);
    every instance is closed at teardown."""
    opened: list[SqlWarehouse] = []

    def open_one() -> SqlWarehouse:
        opened.append(open_warehouse(warehouse_url, base_dir=tmp_path))
        return opened[-1]

    yield open_one
    for wh in opened:
        wh.close()


@pytest.fixture
def warehouse(open_wh: OpenWarehouse) -> SqlWarehouse:
    return open_wh()
