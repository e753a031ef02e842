"""The metadata database: run ledger and other bookkeeping, on SQLite or PostgreSQL.

The same tables run on an embedded SQLite file (WAL journal, so readers don't block the
writer) and on PostgreSQL; only the URL differs. Tables are created on first use.

PostgreSQL (and any other URL) goes through SQLAlchemy Core (the tables are in
:mod:`loopline.store.metadata_tables`, re-exported here). A plain ``sqlite:///FILE`` URL is
opened with the standard ``sqlite3`` module, and SQLAlchemy is imported only when
:attr:`MetadataStore.engine` is first used: an ingest run then never loads it (~0.15 s
of every process start). Both write the same schema and the same value formats.

>>> import tempfile
>>> store = MetadataStore("sqlite:///meta/metadata.db", base_dir=Path(tempfile.mkdtemp()))
>>> import sqlalchemy as sa
>>> "ingest_runs" in sa.inspect(store.engine).get_table_names()
True
>>> store.close()
"""

from __future__ import annotations

import logging
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.errors import MissingDependencyError, StoreError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from loopline.store.metadata_tables import METADATA, JsonDocument, ingest_runs

__all__ = [
    "METADATA",
    "RUN_STATUSES",
    "JsonDocument",
    "MetadataStore",
    "ingest_runs",
]

log = logging.getLogger(__name__)

RUN_STATUSES = ("running", "succeeded", "failed")
_TABLES_MODULE = "loopline.store.metadata_tables"
_LAZY_NAMES = frozenset({"METADATA", "JsonDocument", "ingest_runs"})
_PLAIN_SQLITE = re.compile(r"^(?P<driver>sqlite(?:\+pysqlite)?):///(?P<path>[^?#%@]+)$")
_URL_HINT = "use sqlite:///PATH or postgresql://user@host/db"
_OPEN_HINT = "check that the server is running and the URL, user and database exist"

SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ingest_runs (\n\t"
    + ", \n\t".join(
        [
            "run_id VARCHAR(64) NOT NULL",
            "job VARCHAR(255) NOT NULL",
            "source TEXT NOT NULL",
            "destination TEXT NOT NULL",
            "started_at DATETIME NOT NULL",
            "ended_at DATETIME",
            "status VARCHAR(16) NOT NULL",
            "rows_read BIGINT NOT NULL",
            "rows_written BIGINT NOT NULL",
            "rows_quarantined BIGINT NOT NULL",
            "rows_deduplicated BIGINT NOT NULL",
            "rule_failures JSON NOT NULL",
            "warnings JSON NOT NULL",
            "state_before JSON",
            "state_after JSON",
            "schema_hash VARCHAR(128)",
            "error TEXT",
            "PRIMARY KEY (run_id)",
            "CONSTRAINT ingest_runs_status CHECK (status IN ("
            + ", ".join(f"'{s}'" for s in RUN_STATUSES)
            + "))",
        ]
    )
    + "\n)",
    "CREATE INDEX IF NOT EXISTS ix_ingest_runs_job ON ingest_runs (job)",
)
"""The DDL SQLAlchemy emits for ``ingest_runs`` on SQLite, for the ``sqlite3`` path (a test
checks that both create the same schema)."""


def __getattr__(name: str) -> Any:
    """The SQLAlchemy tables, imported on first use."""
    if name in _LAZY_NAMES:
        import importlib

        return getattr(importlib.import_module(_TABLES_MODULE), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MetadataStore:
    """A connection to the metadata database named by ``url``.

    ``sqlite:///relative/path.db`` is resolved against ``base_dir`` (folders are created);
    ``postgresql://`` / ``postgres://`` use the psycopg 3 driver. ``sqlite_path`` is the
    database file when the URL is a plain SQLite file URL (opened with ``sqlite3`` by
    :meth:`connect_sqlite`), else ``None``.
    """

    def __init__(self, url: str, *, base_dir: Path) -> None:
        self._engine: sa.Engine | None = None
        self._url: sa.URL | None = None
        plain = _PLAIN_SQLITE.match(url)
        path = plain["path"] if plain else None
        self.sqlite_path: Path | None = None
        if plain is None or path is None or path == ":memory:" or path.startswith("file:"):
            self._url = _normalise_url(url, base_dir)
            self._url_text = self._url.render_as_string(hide_password=False)
            self._create_tables()
            return
        file = Path(path) if Path(path).is_absolute() else base_dir / path
        file.parent.mkdir(parents=True, exist_ok=True)
        self.sqlite_path = file
        self._url_text = f"{plain['driver']}:///{file}"
        if _TABLES_MODULE in sys.modules:
            self._create_tables()  # other modules may have added tables: create them all
        else:
            self._create_sqlite_schema()

    @property
    def url(self) -> sa.URL:
        """The normalised URL (a SQLAlchemy URL; SQLAlchemy is imported on first use)."""
        if self._url is None:
            import sqlalchemy as sa

            self._url = sa.make_url(self._url_text)
        return self._url

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages."""
        if self.sqlite_path is not None:
            return self._url_text
        return self.url.render_as_string(hide_password=True)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (created, with every table of METADATA, on first use)."""
        if self._engine is None:
            self._create_tables()
        assert self._engine is not None
        return self._engine

    def connect_sqlite(self) -> sqlite3.Connection:
        """A new ``sqlite3`` connection to :attr:`sqlite_path` (WAL journal, 30 s busy wait).

        Close it after use; its errors are ``sqlite3.Error``.
        """
        if self.sqlite_path is None:
            raise StoreError(
                "the metadata database is not a SQLite file",
                url=self.display_url,
                hint="use MetadataStore.engine for this database",
            )
        # The ledger is written from one thread and read from another (CLI progress).
        conn = sqlite3.connect(self.sqlite_path, timeout=30, check_same_thread=False)
        try:
            _sqlite_pragmas(conn, None)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Release every pooled connection."""
        if self._engine is not None:
            self._engine.dispose()

    def _create_sqlite_schema(self) -> None:
        try:
            with closing(self.connect_sqlite()) as conn:
                for statement in SQLITE_SCHEMA:
                    conn.execute(statement)
                conn.commit()
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the metadata database: {exc}", url=self.display_url, hint=_OPEN_HINT
            ) from exc

    def _create_tables(self) -> None:
        import sqlalchemy as sa

        from loopline.store.metadata_tables import METADATA

        url = self.url
        try:
            engine = sa.create_engine(url, **_engine_options(url))
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(exc.name or "psycopg", "postgres") from exc
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"invalid metadata database URL: {exc}", hint=_URL_HINT) from exc
        if url.get_backend_name() == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        try:
            METADATA.create_all(engine)
        except sa.exc.OperationalError as exc:
            engine.dispose()
            raise StoreError(
                "cannot open the metadata database",
                url=url.render_as_string(hide_password=True),
                hint=_OPEN_HINT,
            ) from exc
        self._engine = engine


def _normalise_url(url: str, base_dir: Path) -> sa.URL:
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"invalid metadata database URL {url!r}", hint=_URL_HINT) from exc
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
