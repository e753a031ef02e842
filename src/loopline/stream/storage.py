"""Where a stream pipeline's micro-batches land: readings, window aggregates, anomalies.

A :class:`StreamSink` writes to one loopline destination (the warehouse or the lake, opened
like an ingest job's). On the warehouse each micro-batch is ONE transaction
(``commit_tables``): raw readings (``append``), window aggregates (``merge`` on
(``_source``, window, device, window_start, metric)), anomalies (``merge`` on (``_source``,
msg_id, metric, detector), or ``append`` when the caller knows they are new: see
:meth:`StreamSink.commit`), the quarantine rows and the pipeline state ``{"watermarks":
{...}, "committed_at": ...}`` of job ``stream:<name>:w<worker>``. A crash leaves all of a
batch or none of it; redelivered messages are then written again.

The lake commits one Delta table at a time: windows, then anomalies, then the readings with
the quarantine rows and the state (job ``stream.<name>.w<worker>``: lake names allow no
colon). The first two are idempotent merges, so a crash between commits only means they are
written again when the unacknowledged messages are redelivered.

Scaled-out workers share one warehouse: the first write of a table by a worker may race
another worker creating it (PostgreSQL refuses the second ``CREATE TABLE``), so that commit,
rolled back, is tried once more and then finds the table.

Every row carries the lineage columns ``_source`` (``stream:<name>``), ``_batch_id`` and
``_ingested_at``; readings also keep ``_topic``. :meth:`StreamSink.enforce_retention`
deletes readings (by event time), windows (by ``window_end``) and anomalies (by
``event_time``) older than ``sink.retention``.

>>> import tempfile
>>> from pathlib import Path
>>> from loopline.config import LooplineConfig
>>> from loopline.config.streams import StreamPipelineConfig
>>> cfg = LooplineConfig(project_dir=Path(tempfile.mkdtemp()))
>>> pipe = StreamPipelineConfig.model_validate(
...     {"transport": {"kind": "memory"}, "metrics": ["temperature"]})
>>> sink = StreamSink("demo", pipe, config=cfg)
>>> sink.job, sink.source
('stream:demo:w0', 'stream:demo')
>>> sink.close()
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import polars as pl
import pyarrow as pa

from loopline import lineage
from loopline.config import DestinationConfig, LooplineConfig
from loopline.config.streams import NatsTransportConfig, StreamPipelineConfig
from loopline.errors import SinkError, StreamError, TransientSinkError
from loopline.ingest.quarantine import QUARANTINE_SCHEMA, empty_quarantine
from loopline.store.destination import QUARANTINE_TABLE, STATE_TABLE, Destination, TableWrite
from loopline.store.factory import open_destination
from loopline.store.warehouse import SqlWarehouse

log = logging.getLogger(__name__)

ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "device": pl.String(),
    "metric": pl.String(),
    "detector": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "value": pl.Float64(),
    "score": pl.Float64(),
    "msg_id": pl.String(),
}
"""Columns of an anomaly row (the sink adds the lineage columns)."""
WINDOW_KEY = ("window", "window_start", "metric")
ANOMALY_KEY = ("msg_id", "metric", "detector")
TOPIC = "_topic"


class _Ranged(Protocol):
    """The two retention / recovery reads that warehouse and lake both offer."""

    def read_since(
        self, table: str, column: str, since: datetime, columns: list[str] | None = None
    ) -> pa.Table | None: ...

    def delete_before(self, table: str, column: str, cutoff: datetime) -> int: ...


class StreamSink:
    """Commits a stream pipeline's micro-batches to its destination (see the module doc).

    ``destination``: an already open destination to use (tests), else one is opened from
    ``pipeline.sink`` and the project's stores. ``worker`` defaults to the NATS worker index
    (0 for MQTT / memory).
    """

    def __init__(
        self,
        name: str,
        pipeline: StreamPipelineConfig,
        *,
        config: LooplineConfig,
        destination: Destination | None = None,
        worker: int | None = None,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.settings = pipeline.sink
        transport = pipeline.transport
        if worker is None:
            worker = transport.worker if isinstance(transport, NatsTransportConfig) else 0
        self.worker = worker
        self.source = f"stream:{name}"
        self.job = f"stream:{name}:w{worker}"
        if self.settings.kind == "lake":  # lake job names allow letters, digits, _ . - only
            self.job = re.sub(r"[^A-Za-z0-9_.-]", ".", self.job)
        self._open: Callable[[], Destination] | None = None
        if destination is None:
            spec = DestinationConfig(kind=self.settings.kind, table=self.settings.readings_table)
            self._open = lambda: open_destination(config.stores, spec, base_dir=config.project_dir)
            destination = self._open()
        self.destination = destination
        self._last_retention = 0.0
        self._written: set[str] = set()  # tables this sink has committed to

    # -- reading -------------------------------------------------------------------------

    def read_state(self) -> dict[str, Any] | None:
        """The state committed with this worker's last micro-batch, or ``None``."""
        return self.destination.read_state(self.job)

    def read_readings(
        self, column: str, since: datetime, columns: list[str] | None = None
    ) -> pl.DataFrame:
        """This pipeline's stored readings whose ``column`` is ``since`` or later.

        With NATS workers, only the partitions this worker consumes (from ``_topic``).
        """
        table = self._ranged().read_since(
            self.settings.readings_table,
            column,
            since,
            None if columns is None else [*columns, lineage.SOURCE, TOPIC],
        )
        if table is None or table.num_rows == 0:
            return pl.DataFrame()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        if lineage.SOURCE in frame.columns:
            frame = frame.filter(pl.col(lineage.SOURCE) == self.source)
        transport = self.pipeline.transport
        sharded = isinstance(transport, NatsTransportConfig) and transport.workers > 1
        if sharded and TOPIC in frame.columns:
            assert isinstance(transport, NatsTransportConfig)
            part = pl.col(TOPIC).str.extract(r"\.(\d+)$").cast(pl.Int64, strict=False)
            frame = frame.filter(part % transport.workers == transport.worker)
        return frame

    def read_table(self, table: str) -> pl.DataFrame:
        """A whole table (tests, the demo, small device registries)."""
        frame = pl.from_arrow(self.destination.read_table(table))
        assert isinstance(frame, pl.DataFrame)
        return frame

    # -- writing -------------------------------------------------------------------------

    def commit(
        self,
        *,
        readings: pl.DataFrame,
        quarantine: pl.DataFrame,
        windows: pl.DataFrame,
        anomalies: pl.DataFrame,
        watermarks: dict[str, str | None],
        batch_id: str,
        new_batch: bool = False,
        new_anomalies: bool = False,
    ) -> None:
        """Commit one micro-batch: readings, windows, anomalies, quarantine rows and state
        (one transaction on the warehouse; see the module docstring for the lake).

        ``new_batch``: ``batch_id`` is fresh and this is its first attempt, so the readings
        append skips looking for earlier rows of it (a scan that grows with the table).
        ``new_anomalies``: no anomaly of this batch can be stored yet, because each comes
        from a reading of this batch that is not stored yet (the processor drops messages
        whose reading is stored) and is committed in the transaction of its reading; the
        warehouse then appends them instead of merging them by key (a merge scans the
        whole table). A re-commit of ``batch_id`` still replaces them."""
        now = datetime.now(UTC)
        stamp = [
            pl.lit(self.source, dtype=pl.String).alias(lineage.SOURCE),
            utc_literal(now).alias(lineage.INGESTED_AT),
        ]
        parts = [TableWrite(self.settings.readings_table, _arrow(readings.with_columns(stamp)))]
        if windows.height:
            window_key = (
                lineage.SOURCE,
                WINDOW_KEY[0],
                self.pipeline.device_field,
                *WINDOW_KEY[1:],
            )
            windows_part = _arrow(windows.with_columns(stamp))
            parts.append(TableWrite(self.settings.windows_table, windows_part, "merge", window_key))
        if anomalies.height:
            anomalies_part = _arrow(anomalies.with_columns(stamp))
            anomaly_key = (lineage.SOURCE, *ANOMALY_KEY)
            mode: Literal["append", "merge"] = "merge"
            if new_anomalies and isinstance(self.destination, SqlWarehouse):
                mode = "append"
            parts.append(
                TableWrite(self.settings.anomalies_table, anomalies_part, mode, anomaly_key)
            )
        rejected = _arrow(quarantine.with_columns(stamp)) if quarantine.height else None
        state = {"watermarks": watermarks, "committed_at": now.isoformat()}
        tables = {part.table for part in parts} | {STATE_TABLE}
        if rejected is not None:
            tables.add(QUARANTINE_TABLE)
        warehouse = self.destination
        if isinstance(warehouse, SqlWarehouse):  # one transaction for every table
            self._first_write_retried(
                tables,
                lambda: warehouse.commit_tables(
                    parts,
                    quarantine=rejected,
                    job=self.job,
                    batch_id=batch_id,
                    state=state,
                    new_batch=new_batch,
                ),
            )
            return
        for part in parts[1:]:  # idempotent merges first: the readings' commit holds the state
            self._commit_one(part, job=f"{self.job}.{part.table}", batch_id=batch_id)
        self._commit_one(
            parts[0],
            job=self.job,
            batch_id=batch_id,
            quarantine=rejected,
            state=state,
            new_batch=new_batch,
        )

    def _commit_one(
        self,
        part: TableWrite,
        *,
        job: str,
        batch_id: str,
        quarantine: pa.Table | None = None,
        state: dict[str, Any] | None = None,
        new_batch: bool = False,
    ) -> None:
        """One ``destination.commit_batch`` (destinations without ``commit_tables``)."""
        tables = {part.table}
        if quarantine is not None:
            tables.add(QUARANTINE_TABLE)
        if state is not None:
            tables.add(STATE_TABLE)
        self._first_write_retried(
            tables,
            lambda: self.destination.commit_batch(
                table=part.table,
                data=part.data,
                mode=part.mode,
                key=list(part.key),
                quarantine=quarantine,
                job=job,
                batch_id=batch_id,
                state=state,
                new_batch=new_batch,
            ),
        )

    def _first_write_retried(self, tables: set[str], commit: Callable[[], int]) -> None:
        """Run ``commit``, once more when it touched a table this sink has not written yet:
        another worker may have created that table concurrently."""
        try:
            commit()
        except TransientSinkError:
            raise  # the processor retries these on a new connection
        except SinkError as exc:
            if tables <= self._written:
                raise
            log.info("first commit to %s failed, trying once more: %s", sorted(tables), exc)
            commit()
        self._written |= tables

    def enforce_retention(self, *, keep_after: datetime | None = None, force: bool = False) -> int:
        """Delete rows older than ``sink.retention`` (at most once a minute unless
        ``force``); never rows at or after ``keep_after`` (what recovery still needs)."""
        retention = self.settings.retention
        if not retention or (not force and time.monotonic() - self._last_retention < 60.0):
            return 0
        self._last_retention = time.monotonic()
        cutoff = datetime.now(UTC) - timedelta(seconds=retention)
        if keep_after is not None:
            cutoff = min(cutoff, keep_after)
        ranged = self._ranged()
        deleted = 0
        for table, column in (
            (self.settings.readings_table, self.pipeline.time_field),
            (self.settings.windows_table, "window_end"),
            (self.settings.anomalies_table, "event_time"),
        ):
            deleted += ranged.delete_before(table, column, cutoff)
        if deleted:
            log.info("retention: deleted %d rows older than %s", deleted, cutoff.isoformat())
        return deleted

    def reopen(self) -> None:
        """Open the destination again (a new connection) after a lost one: a
        :class:`TransientSinkError` means the transaction is void and the old connection
        unusable. A destination given to the constructor is kept as it is."""
        if self._open is None:
            return
        try:
            self.destination.close()
        except Exception as exc:  # noqa: BLE001 - the old connection is gone either way
            log.debug("closing the lost sink connection: %s", exc)
        self.destination = self._open()

    def close(self) -> None:
        self.destination.close()

    def _ranged(self) -> _Ranged:
        destination: Any = self.destination
        if not (hasattr(destination, "read_since") and hasattr(destination, "delete_before")):
            raise StreamError(
                f"{type(destination).__name__} cannot serve a stream sink",
                sink=self.settings.kind,
                hint="use kind: warehouse or kind: lake (they offer read_since / delete_before)",
            )
        ranged: _Ranged = destination
        return ranged


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_literal(moment: datetime) -> pl.Expr:
    """``moment`` (timezone-aware) as a ``Datetime("us", "UTC")`` literal, to the microsecond.

    Built from its integer microseconds: a quarter of what ``pl.lit`` of a datetime costs
    (every micro-batch stamps its rows).

    >>> pl.select(utc_literal(datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC))).item()
    datetime.datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=zoneinfo.ZoneInfo(key='UTC'))
    """
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return pl.lit(micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def _arrow(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as Arrow without all-null columns of no type (no table can store those)."""
    untyped = [c for c, dtype in frame.schema.items() if dtype == pl.Null()]
    return frame.drop(untyped).to_arrow()


def rejects_to_quarantine(
    rejects: pl.DataFrame, source: str, batch_id: str, now: datetime
) -> pl.DataFrame:
    """Quarantine rows for the messages the decoder rejected (rule, raw text, lineage).

    NUL characters in the raw text are written as ``\\x00``: PostgreSQL text cannot hold
    them, and a garbled payload must not fail the batch that quarantines it.
    """
    if rejects.height == 0:
        return empty_quarantine()
    return rejects.select(
        *[
            pl.col(c).cast(pl.String).str.replace_all("\x00", "\\x00", literal=True)
            for c in ("_rule", "_column", "_raw_value", "_record")
        ],
        pl.lit(source, dtype=pl.String).alias(lineage.SOURCE),
        pl.lit(batch_id, dtype=pl.String).alias(lineage.BATCH_ID),
        pl.lit(now, dtype=QUARANTINE_SCHEMA[lineage.INGESTED_AT]).alias(lineage.INGESTED_AT),
    )


def empty_anomalies() -> pl.DataFrame:
    """An anomalies frame with no rows."""
    return pl.DataFrame(schema=ANOMALY_SCHEMA)


__all__ = [
    "ANOMALY_SCHEMA",
    "StreamSink",
    "empty_anomalies",
    "rejects_to_quarantine",
    "utc_literal",
]
