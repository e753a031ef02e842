"""Enrichment of stream readings from a device registry table in the warehouse.

:class:`DeviceRegistry` left-joins the registry's columns that a reading's payload does not
carry, on the pipeline's device column (a payload value wins). The table is read again at
most every ``ENRICH_REFRESH_S`` seconds, from the sink when the sink is the warehouse (the
caller's ``read_sink`` reads it), else from the project's warehouse. A table that cannot be
read, or has no device column, leaves readings un-enriched (with a warning).

>>> from loopline.config import LooplineConfig
>>> from loopline.config.streams import StreamPipelineConfig
>>> pipe = StreamPipelineConfig.model_validate({"transport": {"kind": "memory"},
...     "metrics": ["temperature"], "enrich_table": "devices"})
>>> registry = DeviceRegistry(pipe, LooplineConfig())
>>> devices = pl.DataFrame({"device": ["d1"], "site": ["north"]})
>>> readings = pl.DataFrame({"device": ["d1", "d2"], "temperature": [20.5, 21.0]})
>>> registry.join(readings, readings.columns, read_sink=lambda table: devices).rows()
[('d1', 20.5, 'north'), ('d2', 21.0, None)]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import polars as pl

from loopline import lineage
from loopline.config import LooplineConfig
from loopline.config.streams import StreamPipelineConfig
from loopline.errors import StoreError

log = logging.getLogger(__name__)

ENRICH_REFRESH_S = 60.0


class DeviceRegistry:
    """The pipeline's ``enrich_table``, joined onto readings (see the module docstring)."""

    def __init__(self, pipeline: StreamPipelineConfig, config: LooplineConfig) -> None:
        self.pipeline = pipeline
        self.config = config
        self._frame: pl.DataFrame | None = None
        self._loaded = -ENRICH_REFRESH_S

    def join(
        self,
        good: pl.DataFrame,
        payload: list[str],
        *,
        read_sink: Callable[[str], pl.DataFrame],
    ) -> pl.DataFrame:
        """``good`` with the registry's columns that ``payload`` (its payload's columns)
        lacks; ``read_sink`` reads a table from a warehouse sink."""
        table = self.pipeline.enrich_table
        if table is None or good.height == 0:
            return good
        if time.monotonic() - self._loaded >= ENRICH_REFRESH_S:
            self._loaded = time.monotonic()
            self._frame = self._load(table, read_sink)
        registry = self._frame
        if registry is None:
            return good
        device = self.pipeline.device_field
        # Validation against the stored readings may have added them as nulls: replace those.
        extra = [c for c in registry.columns if c != device and c not in payload]
        if not extra:
            return good
        base = good.drop([c for c in extra if c in good.columns])
        return base.join(registry.select(device, *extra), on=device, how="left")

    def _load(self, table: str, read_sink: Callable[[str], pl.DataFrame]) -> pl.DataFrame | None:
        """The device registry from the warehouse (the sink's, or the project's one when
        the sink is the lake)."""
        device = self.pipeline.device_field
        try:
            if self.pipeline.sink.kind == "warehouse":
                frame = read_sink(table)
            else:
                from loopline.store.warehouse import open_warehouse

                warehouse = open_warehouse(
                    self.config.stores.warehouse_url, base_dir=self.config.project_dir
                )
                try:
                    loaded = pl.from_arrow(warehouse.read_table(table))
                finally:
                    warehouse.close()
                assert isinstance(loaded, pl.DataFrame)
                frame = loaded
        except StoreError as exc:
            log.warning(
                "enrichment table %r cannot be read, readings go un-enriched: %s", table, exc
            )
            return None
        if device not in frame.columns:
            log.warning("enrichment table %r has no %r column; not joined", table, device)
            return None
        keep = [c for c in frame.columns if not lineage.is_lineage(c)]
        return (
            frame.select(keep)
            .with_columns(pl.col(device).cast(pl.String))
            .unique(subset=[device], keep="last", maintain_order=True)
        )


__all__ = ["ENRICH_REFRESH_S", "DeviceRegistry"]
