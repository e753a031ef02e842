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

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from loopline.errors import StoreError
from loopline.store.metadata import RUN_STATUSES, MetadataStore, ingest_runs


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
    """Records ingest runs in the metadata database."""

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
        with self._connect("start run") as conn:
            conn.execute(
                ingest_runs.update()
                .where(ingest_runs.c.job == job, ingest_runs.c.status == "running")
                .values(
                    status="failed",
                    ended_at=now,
                    error="interrupted: the process ended before the run finished; "
                    f"run {run.run_id} resumed from the last committed batch",
                )
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
        with self._connect("finish run") as conn:
            result = conn.execute(
                ingest_runs.update().where(ingest_runs.c.run_id == run.run_id).values(**values)
            )
            if result.rowcount == 0:
                raise StoreError(
                    "run is not in the ledger",
                    run_id=run.run_id,
                    hint="record it with RunLedger.start() first",
                )

    def list(self, *, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first, optionally of one ``job``."""
        query = sa.select(ingest_runs).order_by(ingest_runs.c.run_id.desc()).limit(limit)
        if job is not None:
            query = query.where(ingest_runs.c.job == job)
        with self._connect("list runs") as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def get(self, run_id: str) -> RunRecord | None:
        """The run ``run_id``, or ``None``."""
        query = sa.select(ingest_runs).where(ingest_runs.c.run_id == run_id)
        with self._connect("read run") as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(row)

    @contextmanager
    def _connect(self, action: str) -> Iterator[sa.Connection]:
        """A transaction whose database errors become a :class:`StoreError`."""
        engine = self.store.engine
        try:
            with engine.begin() as conn:
                yield conn
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"cannot {action} in the run ledger: {exc.orig}",
                url=engine.url.render_as_string(hide_password=True),
                hint="check that the metadata database is reachable and writable",
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


def _record(row: sa.RowMapping) -> RunRecord:
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
