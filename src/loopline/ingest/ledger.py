"""The run ledger: one row per ingest run, with its counts, status, state and error.

A run is recorded as ``running`` the moment it starts (committed at once, so a killed
process leaves a visible ``running`` row) and updated when it ends.

>>> import tempfile
>>> from pathlib import Path
>>> store = MetadataStore("sqlite:///m.db", base_dir=Path(tempfile.mkdtemp()))
>>> ledger = RunLedger(store)
>>> run = ledger.start(job="orders", source="file:orders", destination="lake:orders",
...                    state_before=None)
>>> run.rows_read, run.status = 10, "succeeded"
>>> ledger.finish(run)
>>> [(r.job, r.status, r.rows_read) for r in ledger.list()]
[('orders', 'succeeded', 10)]
>>> store.close()
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loopline.errors import StoreError
from loopline.store.metadata import RUN_STATUSES, MetadataStore

if TYPE_CHECKING:
    import sqlalchemy as sa

_COLUMNS = (
    "run_id", "job", "source", "destination", "started_at", "ended_at", "status",
    "rows_read", "rows_written", "rows_quarantined", "rows_deduplicated", "rule_failures",
    "warnings", "state_before", "state_after", "schema_hash", "error",
)  # fmt: skip
_JSON_COLUMNS = frozenset({"rule_failures", "warnings", "state_before", "state_after"})
_TIME_COLUMNS = frozenset({"started_at", "ended_at"})
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM ingest_runs"
_STORE_HINT = "check that the metadata database is reachable and writable"


@dataclass
class RunRecord:
    """One ingest run as the ledger stores it.

    ``rule_failures``: rows quarantined per rule; ``warnings``: rows flagged per ``warn``
    rule; ``state_before`` / ``state_after``: the source state the run started from and
    the last one it committed.
    """

    run_id: str
    job: str
    source: str
    destination: str
    started_at: datetime
    ended_at: datetime | None = None
    status: str = "running"
    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    rows_deduplicated: int = 0
    rule_failures: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    state_before: dict[str, Any] | None = None
    state_after: dict[str, Any] | None = None
    schema_hash: str | None = None
    error: str | None = None


def new_run_id(now: datetime | None = None) -> str:
    """A unique id that sorts by start time (UTC, to the microsecond), then at random.

    >>> new_run_id(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))[:22]
    '20250102T030405000000-'
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"


class RunLedger:
    """Records ingest runs in the metadata database.

    On a SQLite file it talks ``sqlite3`` directly (SQLAlchemy stays unimported), writing
    what SQLAlchemy would: times as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text, JSON as
    ``json.dumps`` text; anywhere else through SQLAlchemy Core.
    """

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def start(
        self, *, job: str, source: str, destination: str, state_before: dict[str, Any] | None
    ) -> RunRecord:
        """Record a new ``running`` run and return it.

        Runs of the same job still marked ``running`` were cut off (``kill -9``, a lost
        machine) — one job runs one at a time, its destination holds a single writer — so
        they are closed as ``failed`` with an "interrupted" error.
        """
        now = datetime.now(UTC)
        run = RunRecord(
            run_id=new_run_id(now),
            job=job,
            source=source,
            destination=destination,
            started_at=now,
            state_before=state_before,
        )
        error = (
            "interrupted: the process ended before the run finished; "
            f"run {run.run_id} resumed from the last committed batch"
        )
        if self.store.sqlite_path is not None:
            row = _sqlite_values(_row(run))
            with self._sqlite("start run") as db:
                db.execute(
                    "UPDATE ingest_runs SET status = ?, ended_at = ?, error = ? "
                    "WHERE job = ? AND status = ?",
                    ("failed", _sqlite_time(now), error, job, "running"),
                )
                db.execute(
                    f"INSERT INTO ingest_runs ({', '.join(row)}) "
                    f"VALUES ({', '.join('?' * len(row))})",
                    tuple(row.values()),
                )
            return run
        from loopline.store.metadata_tables import ingest_runs

        with self._connect("start run") as conn:
            conn.execute(
                ingest_runs.update()
                .where(ingest_runs.c.job == job, ingest_runs.c.status == "running")
                .values(status="failed", ended_at=now, error=error)
            )
            conn.execute(ingest_runs.insert().values(**_row(run)))
        return run

    def finish(self, run: RunRecord) -> None:
        """Write ``run``'s final counts, status, state, error and end time."""
        if run.status not in RUN_STATUSES:
            raise StoreError(
                f"unknown run status {run.status!r}",
                run_id=run.run_id,
                hint=f"use one of: {', '.join(RUN_STATUSES)}",
            )
        if run.ended_at is None and run.status != "running":
            run.ended_at = datetime.now(UTC)
        values = _row(run)
        del values["run_id"]
        if self.store.sqlite_path is not None:
            row = _sqlite_values(values)
            with self._sqlite("finish run") as db:
                updated = db.execute(
                    f"UPDATE ingest_runs SET {', '.join(f'{c} = ?' for c in row)} WHERE run_id = ?",
                    (*row.values(), run.run_id),
                ).rowcount
        else:
            from loopline.store.metadata_tables import ingest_runs

            with self._connect("finish run") as conn:
                updated = conn.execute(
                    ingest_runs.update().where(ingest_runs.c.run_id == run.run_id).values(**values)
                ).rowcount
        if updated == 0:
            raise StoreError(
                "run is not in the ledger",
                run_id=run.run_id,
                hint="record it with RunLedger.start() first",
            )

    def list(self, *, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first, optionally of one ``job``."""
        if self.store.sqlite_path is not None:
            where, params = ("WHERE job = ? ", (job,)) if job is not None else ("", ())
            with self._sqlite("list runs") as db:
                rows = db.execute(
                    f"{_SELECT} {where}ORDER BY run_id DESC LIMIT ?", (*params, limit)
                ).fetchall()
            return [_sqlite_record(row) for row in rows]
        import sqlalchemy as sa

        from loopline.store.metadata_tables import ingest_runs

        query = sa.select(ingest_runs).order_by(ingest_runs.c.run_id.desc()).limit(limit)
        if job is not None:
            query = query.where(ingest_runs.c.job == job)
        with self._connect("list runs") as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def get(self, run_id: str) -> RunRecord | None:
        """The run ``run_id``, or ``None``."""
        if self.store.sqlite_path is not None:
            with self._sqlite("read run") as db:
                found = db.execute(f"{_SELECT} WHERE run_id = ?", (run_id,)).fetchone()
            return None if found is None else _sqlite_record(found)
        import sqlalchemy as sa

        from loopline.store.metadata_tables import ingest_runs

        query = sa.select(ingest_runs).where(ingest_runs.c.run_id == run_id)
        with self._connect("read run") as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(row)

    @contextmanager
    def _connect(self, action: str) -> Iterator[sa.Connection]:
        """A transaction whose database errors become a :class:`StoreError`."""
        import sqlalchemy as sa

        engine = self.store.engine
        try:
            with engine.begin() as conn:
                yield conn
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"cannot {action} in the run ledger: {exc.orig}",
                url=engine.url.render_as_string(hide_password=True),
                hint=_STORE_HINT,
            ) from exc

    @contextmanager
    def _sqlite(self, action: str) -> Iterator[sqlite3.Connection]:
        """A ``sqlite3`` transaction (committed on success) whose errors are StoreErrors."""
        try:
            with closing(self.store.connect_sqlite()) as conn, conn:
                yield conn
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot {action} in the run ledger: {exc}",
                url=self.store.display_url,
                hint=_STORE_HINT,
            ) from exc


def _row(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "job": run.job,
        "source": run.source,
        "destination": run.destination,
        "started_at": _utc(run.started_at),
        "ended_at": _utc(run.ended_at),
        "status": run.status,
        "rows_read": run.rows_read,
        "rows_written": run.rows_written,
        "rows_quarantined": run.rows_quarantined,
        "rows_deduplicated": run.rows_deduplicated,
        "rule_failures": dict(run.rule_failures),
        "warnings": dict(run.warnings),
        "state_before": run.state_before,
        "state_after": run.state_after,
        "schema_hash": run.schema_hash,
        "error": run.error,
    }


def _sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy stores it on SQLite: UTC wall time, microseconds, no zone."""
    utc = _utc(value)
    return None if utc is None else utc.strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` (see :func:`_row`) as SQLAlchemy binds it on SQLite (JSON ``None`` is 'null')."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        if column in _JSON_COLUMNS:
            out[column] = json.dumps(value)
        elif column in _TIME_COLUMNS:
            out[column] = _sqlite_time(value)
        else:
            out[column] = value
    return out


def _sqlite_record(values: tuple[Any, ...]) -> RunRecord:
    row: dict[str, Any] = dict(zip(_COLUMNS, values, strict=True))
    for column in _JSON_COLUMNS:
        row[column] = None if row[column] is None else json.loads(row[column])
    for column in _TIME_COLUMNS:
        row[column] = None if row[column] is None else datetime.fromisoformat(row[column])
    return _record(row)


def _record(row: Mapping[Any, Any]) -> RunRecord:
    started = _utc(row["started_at"])
    assert started is not None  # NOT NULL column
    return RunRecord(
        run_id=row["run_id"],
        job=row["job"],
        source=row["source"],
        destination=row["destination"],
        started_at=started,
        ended_at=_utc(row["ended_at"]),
        status=row["status"],
        rows_read=int(row["rows_read"]),
        rows_written=int(row["rows_written"]),
        rows_quarantined=int(row["rows_quarantined"]),
        rows_deduplicated=int(row["rows_deduplicated"]),
        rule_failures=dict(row["rule_failures"] or {}),
        warnings=dict(row["warnings"] or {}),
        state_before=row["state_before"],
        state_after=row["state_after"],
        schema_hash=row["schema_hash"],
        error=row["error"],
    )


def _utc(value: datetime | None) -> datetime | None:
    """Naive datetimes (SQLite hands those back) are UTC; aware ones are converted."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
