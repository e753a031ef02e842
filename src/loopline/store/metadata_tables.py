"""The metadata tables as SQLAlchemy Core objects (imported on first use, not at start-up).

:mod:`loopline.store.metadata` re-exports :data:`METADATA`, :class:`JsonDocument` and
:data:`ingest_runs` from here lazily, so an ingest run on the default SQLite ledger never
imports SQLAlchemy (~0.15 s of every process start); PostgreSQL, and every module that
defines a table of its own, use these.

>>> "ingest_runs" in METADATA.tables
True
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from loopline.store.metadata import RUN_STATUSES

METADATA = sa.MetaData()
"""Every metadata table; other modules add theirs here before the first store is opened."""


class JsonDocument(sa.types.TypeDecorator[Any]):
    """JSON on every database, stored as ``JSONB`` on PostgreSQL.

    Unlike ``JSON().with_variant(postgresql.JSONB(), ...)`` it loads SQLAlchemy's
    PostgreSQL dialect only on PostgreSQL (~40 ms of every SQLite run's start-up).
    """

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


_JSON = JsonDocument()

ingest_runs = sa.Table(
    "ingest_runs",
    METADATA,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job", sa.String(255), nullable=False, index=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows_read", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_quarantined", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_deduplicated", sa.BigInteger, nullable=False, default=0),
    sa.Column("rule_failures", _JSON, nullable=False),
    sa.Column("warnings", _JSON, nullable=False),
    sa.Column("state_before", _JSON),
    sa.Column("state_after", _JSON),
    sa.Column("schema_hash", sa.String(128)),
    sa.Column("error", sa.Text),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")",
        name="ingest_runs_status",
    ),
)
