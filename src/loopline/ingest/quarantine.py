"""Quarantine rows and the result every processing stage returns.

A quarantine row says which rule failed, on which column, with which raw value, and keeps
the whole record as JSON plus the lineage columns, so nothing is dropped silently.

>>> import polars as pl
>>> df = pl.DataFrame({"amount": ["x"], "_source": ["f"], "_batch_id": ["b"],
...                    "_ingested_at": [None]})
>>> to_quarantine(df, rule="type:amount", column="amount", raw=pl.col("amount")).columns
['_rule', '_column', '_raw_value', '_record', '_source', '_batch_id', '_ingested_at']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from loopline import lineage
from loopline.ingest.sources.base import FORMAT_KEY
from loopline.store.destination import QUARANTINE_ARROW_SCHEMA

if TYPE_CHECKING:
    from loopline.ingest.schema_drift import SchemaDrift


QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    f.name: pl.Datetime(f.type.unit, f.type.tz) if pa.types.is_timestamp(f.type) else pl.String()
    for f in QUARANTINE_ARROW_SCHEMA
}
"""The quarantine columns as Polars types; defined once, in the store's destination module."""


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def to_quarantine(
    failing: pl.DataFrame, *, rule: str, column: str | None, raw: pl.Expr | None
) -> pl.DataFrame:
    """Quarantine rows for the ``failing`` rows of one rule (vectorised, no Python loop).

    ``raw`` evaluates to the offending value (cast to string); ``None`` when the rule spans
    several columns.
    """
    payload = [c for c in failing.columns if not lineage.is_lineage(c)]
    record = pl.struct(payload).struct.json_encode() if payload else pl.lit("{}", dtype=pl.String)
    out = failing.select(
        pl.lit(rule, dtype=pl.String).alias("_rule"),
        pl.lit(column, dtype=pl.String).alias("_column"),
        (raw.cast(pl.String) if raw is not None else pl.lit(None, dtype=pl.String)).alias(
            "_raw_value"
        ),
        record.alias("_record"),
        *[
            (pl.col(c) if c in failing.columns else pl.lit(None)).cast(dtype).alias(c)
            for c, dtype in QUARANTINE_SCHEMA.items()
            if lineage.is_lineage(c) and c not in ("_rule", "_column", "_raw_value", "_record")
        ],
    )
    return out


def parse_rule(rejects: pa.Table) -> str:
    """The rule rows a source could not parse are quarantined under: ``parse:<format>``.

    >>> from loopline.ingest.sources.base import REJECTS_SCHEMA
    >>> parse_rule(REJECTS_SCHEMA.with_metadata({"format": "csv"}).empty_table())
    'parse:csv'
    """
    fmt = (rejects.schema.metadata or {}).get(FORMAT_KEY, b"source").decode()
    return f"parse:{fmt}"


def rejects_to_quarantine(
    rejects: pa.Table, *, source: str, batch_id: str, ingested_at: datetime
) -> pl.DataFrame:
    """Quarantine rows for a chunk's rejects (vectorised): raw text, ``{"line", "reason"}``.

    >>> from datetime import UTC
    >>> from loopline.ingest.sources.rejects import RejectLog
    >>> log = RejectLog("csv")
    >>> log.add(7, "1,2,3", "expected 2 fields, got 3")
    >>> q = rejects_to_quarantine(log.take(), source="file:a.csv", batch_id="b",
    ...                           ingested_at=datetime.now(UTC))
    >>> q.select("_rule", "_raw_value", "_record").row(0)
    ('parse:csv', '1,2,3', '{"line":7,"reason":"expected 2 fields, got 3"}')
    """
    frame = pl.from_arrow(rejects.select(["line", "raw", "reason"]))
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        pl.lit(parse_rule(rejects), dtype=pl.String).alias("_rule"),
        pl.lit(None, dtype=pl.String).alias("_column"),
        pl.col("raw").cast(pl.String).alias("_raw_value"),
        pl.struct(pl.col("line").cast(pl.Int64), pl.col("reason").cast(pl.String))
        .struct.json_encode()
        .alias("_record"),
        pl.lit(source, dtype=pl.String).alias(lineage.SOURCE),
        pl.lit(batch_id, dtype=pl.String).alias(lineage.BATCH_ID),
        pl.lit(ingested_at, dtype=QUARANTINE_SCHEMA[lineage.INGESTED_AT]).alias(
            lineage.INGESTED_AT
        ),
    )


@dataclass
class StageResult:
    """What a stage (cleansing, coercion, rules) hands to the next one.

    ``counts``: rows quarantined per rule / step; ``warnings``: rows flagged by ``warn``
    rules; ``deduplicated``: rows removed as duplicates; ``drift``: how the batch's columns
    differ from the stored table (set by contract validation).
    """

    data: pl.DataFrame
    quarantine: pl.DataFrame = field(default_factory=empty_quarantine)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    deduplicated: int = 0
    drift: SchemaDrift | None = None
