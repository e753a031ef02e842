"""Where loopline keeps things: metadata database, warehouse and lake URLs.

>>> StoresConfig().warehouse_url
'duckdb:///.loopline/warehouse.duckdb'
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StoresConfig(BaseModel):
    """Store URLs. Relative paths are resolved against the project folder.

    Environment variables ``LOOPLINE_METADATA_URL``, ``LOOPLINE_WAREHOUSE_URL`` and
    ``LOOPLINE_LAKE_URL`` override these at load time.
    """

    model_config = ConfigDict(extra="forbid")

    metadata_url: str = Field(
        "sqlite:///.loopline/metadata.db",
        description="SQLAlchemy URL of the metadata database (run ledger, state).",
    )
    warehouse_url: str = Field(
        "duckdb:///.loopline/warehouse.duckdb",
        description="duckdb:///PATH or postgresql://... for query-able tables.",
    )
    lake_url: str = Field(
        ".loopline/lake",
        description="Local folder or fsspec / pyarrow URL (s3://bucket/prefix) for Parquet files.",
    )


class AlertsConfig(BaseModel):
    """Where a failed run is reported besides the log."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = Field(
        None, description="POSTed a Slack-compatible JSON message when a run fails."
    )
