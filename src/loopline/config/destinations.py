"""Where an ingest job writes: a warehouse table, the lake, or a PostgreSQL table.

>>> DestinationConfig(table="orders").mode
'append'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class DestinationConfig(BaseModel):
    """``kind``: ``warehouse`` (the configured warehouse), ``lake`` (Parquet, optionally
    partitioned) or ``postgres`` (a PostgreSQL table at ``url``).

    ``mode``: ``append``, ``merge`` (upsert by ``key``) or ``replace`` (swap the table at the end
    of a successful run).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["warehouse", "lake", "postgres"] = "warehouse"
    table: str
    mode: Literal["append", "merge", "replace"] = "append"
    key: list[str] = Field(default_factory=list)
    partition_by: list[str] = Field(default_factory=list)
    url: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> DestinationConfig:
        if self.mode == "merge" and not self.key:
            raise ValueError("mode 'merge' needs 'key': the columns rows are matched on")
        if self.kind == "postgres" and self.url is None:
            raise ValueError("kind 'postgres' needs 'url': postgresql://user@host/db")
        if self.partition_by and self.kind != "lake":
            raise ValueError("'partition_by' applies to kind 'lake' only")
        return self
