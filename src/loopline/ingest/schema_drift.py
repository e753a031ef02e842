"""Schema drift: how a batch's columns differ from the destination table's stored schema.

Internal columns (lineage and anything else starting with ``_``) never drift. Types are
compared as Polars dtypes, so Arrow spellings of one type (``string`` / ``large_string``)
are not drift.

>>> import pyarrow as pa
>>> stored = pa.schema([("id", pa.int64()), ("name", pa.string()), ("_batch_id", pa.string())])
>>> drift = detect_drift(pa.schema([("id", pa.string()), ("email", pa.string())]), stored)
>>> drift.new, drift.missing, drift.retyped
(['email'], ['name'], {'id': ('Int64', 'String')})
>>> drift.summary()
'new columns: email; missing columns: name; retyped columns: id (stored Int64, batch String)'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from loopline import lineage


@dataclass(frozen=True)
class SchemaDrift:
    """Columns that are new in the batch, missing from it, or of another type than stored.

    ``retyped`` maps a column to ``(stored dtype, batch dtype)`` as Polars type names.
    """

    new: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the batch differs from the stored schema at all."""
        return bool(self.new or self.missing or self.retyped)

    def summary(self) -> str:
        """One line for logs and error messages; ``'no drift'`` when nothing changed."""
        parts = []
        if self.new:
            parts.append("new columns: " + ", ".join(self.new))
        if self.missing:
            parts.append("missing columns: " + ", ".join(self.missing))
        if self.retyped:
            parts.append(
                "retyped columns: "
                + ", ".join(
                    f"{name} (stored {stored}, batch {batch})"
                    for name, (stored, batch) in self.retyped.items()
                )
            )
        return "; ".join(parts) if parts else "no drift"


def polars_schema(schema: pa.Schema | pl.Schema) -> pl.Schema:
    """The Polars view of an Arrow or Polars schema.

    >>> polars_schema(pa.schema([("a", pa.large_string())]))
    Schema([('a', String)])
    """
    if isinstance(schema, pl.Schema):
        return schema
    return pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]


def detect_drift(batch_schema: pa.Schema | pl.Schema, stored: pa.Schema | None) -> SchemaDrift:
    """Compare a batch schema with the stored one; ``stored=None`` (a new table) is no drift."""
    if stored is None:
        return SchemaDrift()
    batch = {k: v for k, v in polars_schema(batch_schema).items() if not lineage.is_lineage(k)}
    kept = {k: v for k, v in polars_schema(stored).items() if not lineage.is_lineage(k)}
    return SchemaDrift(
        new=[name for name in batch if name not in kept],
        missing=[name for name in kept if name not in batch],
        retyped={
            name: (str(kept[name]), str(dtype))
            for name, dtype in batch.items()
            if name in kept and dtype != kept[name] and kept[name] != pl.Null()
        },
    )
