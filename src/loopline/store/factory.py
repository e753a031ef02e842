"""Open the destination an ingest job writes to: warehouse, PostgreSQL table or lake."""

from __future__ import annotations

from pathlib import Path

from loopline.config import DestinationConfig, StoresConfig
from loopline.store.destination import Destination


def open_destination(
    stores: StoresConfig, destination: DestinationConfig, *, base_dir: Path
) -> Destination:
    """The :class:`Destination` for ``destination`` under the configured ``stores``."""
    if destination.kind == "lake":
        from loopline.store.lake import ParquetLake

        return ParquetLake(
            stores.lake_url, base_dir=base_dir, partition_by=destination.partition_by
        )
    from loopline.store.warehouse import open_warehouse

    if destination.kind == "postgres":
        assert destination.url is not None  # checked by DestinationConfig
        return open_warehouse(destination.url.get_secret_value(), base_dir=base_dir)
    return open_warehouse(stores.warehouse_url, base_dir=base_dir)
