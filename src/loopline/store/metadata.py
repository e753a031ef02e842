"""The metadata database: run ledger and other bookkeeping, on SQLite or PostgreSQL.

The same SQLAlchemy Core tables run on an embedded SQLite file (WAL journal, so readers
don't block the writer) and on PostgreSQL; only the URL differs. Tables are created on
first use.

>>> import tempfile
>>> store = MetadataStore("sqlite:///meta/metadata.db", base_dir=Path(tempfile.mkdtemp()))
>>> sorted(sa.inspect(store.engine).get_table_names())
['ingest_runs']
>>> store.close()
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from loopline.errors import MissingDependencyError, StoreError

log = logging.getLogger(__name__)

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
RUN_STATUSES = ("running", "succeeded", "failed")

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


class MetadataStore:
    """A connection to the metadata database named by ``url``.

    ``sqlite:///relative/path.db`` is resolved against ``base_dir`` (folders are created);
    ``postgresql://`` / ``postgres://`` use the psycopg 3 driver.
    """

    def __init__(self, url: str, *, base_dir: Path) -> None:
        self.url = _normalise_url(url, base_dir)
        try:
            self.engine = sa.create_engine(self.url, **_engine_options(self.url))
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(exc.name or "psycopg", "postgres") from exc
        except sa.exc.ArgumentError as exc:
            raise StoreError(
                f"invalid metadata database URL: {exc}",
                hint="use sqlite:///PATH or postgresql://user@host/db",
            ) from exc
        if self.url.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            METADATA.create_all(self.engine)
        except sa.exc.OperationalError as exc:
            raise StoreError(
                "cannot open the metadata database",
                url=self.url.render_as_string(hide_password=True),
                hint="check that the server is running and the URL, user and database exist",
            ) from exc

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()


def _normalise_url(url: str, base_dir: Path) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(
            f"invalid metadata database URL {url!r}",
            hint="use sqlite:///PATH or postgresql://user@host/db",
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            path = path if path.is_absolute() else base_dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            return parsed.set(database=str(path))
    return parsed


def _engine_options(url: sa.URL) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        # The ledger is written from one thread and read from another (CLI progress).
        return {"connect_args": {"check_same_thread": False, "timeout": 30}}
    return {"pool_pre_ping": True}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
