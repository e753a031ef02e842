"""The stream processor: one loop that turns broker messages into stored, windowed, scored rows.

Per micro-batch (cut when it holds ``sink.max_rows`` messages, a third of the transport's
unacknowledged window, or its first message waited ``sink.max_delay``):

receive → decode → drop duplicates (within the batch, and ids remembered by
:class:`~loopline.stream.dedupe.DedupeMemory`) → contract coerce / validate (the pipeline's
contract, else one inferred from the first batch) → ``transform`` (string steps, then value
steps) → enrich (left join of ``enrich_table`` on the device column, reloaded every minute)
→ event-time windows → detectors per metric → alerts → remember the ids → hand-off to the
:class:`~loopline.stream.commit_writer.CommitWriter`, whose thread commits the batch
(readings, windows, anomalies, quarantine and watermarks in one warehouse transaction) and
then acks it while this loop prepares the next batch.

Delivery guarantees: messages are acked only after the commit that holds them, batches are
committed and acked in order, so a crash anywhere (kill -9 included) loses nothing: the
broker redelivers what was not acked. Nothing is stored twice: remembered ids drop
redeliveries (seeded on start from the readings ingested within ``sink.dedupe_window``; a
batch's ids are remembered when it is handed over, as its commit precedes every later
one and a failed commit ends the run), windows are merged by key, and a batch's anomalies
are stored in the transaction of the readings that raised them (on the lake, in separate
commits: merged by key).

Recovery on start: the watermarks committed with the last batch are read back, and every
window operator is rebuilt from the stored readings not older than its watermark − horizon.
Detector state is not persisted: after a restart each device warms up again (a reading is
scored only while it is not stored, so its anomalies are never stored twice).

Quiet streams: when nothing arrives for ``idle_after`` seconds, event time is assumed to go
on at the wall-clock rate, so the watermark moves to (newest event seen + seconds of quiet
− watermark delay) and the windows that this closes are emitted and committed.

Backpressure: the loop pulls from the transport only when it is ready for the next batch,
a batch is handed to the writer only once the previous one is stored, and the transports
bound their own unacked messages, so a slow sink slows intake; nothing here buffers without
bound. Setting ``stop`` ends :meth:`StreamProcessor.run` after the current batch is
committed and acked (the CLI sets it on SIGTERM).

>>> from loopline.config import LooplineConfig
>>> from loopline.config.streams import StreamPipelineConfig
>>> pipe = StreamPipelineConfig.model_validate({"transport": {"kind": "memory"},
...     "metrics": ["temperature"], "windows": [{"kind": "tumbling", "size": "10s"}]})
>>> StreamProcessor("demo", pipe, config=LooplineConfig()).batch_limit
5000
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from loopline import lineage
from loopline.config import STRING_STEPS, LooplineConfig
from loopline.config.streams import (
    MemoryTransportConfig,
    MqttTransportConfig,
    NatsTransportConfig,
    StreamPipelineConfig,
)
from loopline.errors import StreamError
from loopline.ingest.cleanse import apply_steps, validate_steps
from loopline.ingest.contract import ContractEngine
from loopline.ingest.quarantine import StageResult, empty_quarantine
from loopline.stream.commit_writer import CommitWriter, PreparedBatch
from loopline.stream.dedupe import DedupeMemory
from loopline.stream.enrich import DeviceRegistry
from loopline.stream.status import StreamMetrics, StreamStatus
from loopline.stream.storage import (
    StreamSink,
    empty_anomalies,
    rejects_to_quarantine,
    utc_literal,
)
from loopline.stream.transport import Delivery, Transport

if TYPE_CHECKING:
    import threading

    from loopline.stream.alerts import AlertManager
    from loopline.stream.detectors import Detector
    from loopline.stream.windows import WindowOperator

log = logging.getLogger(__name__)

_UTC_US = pl.Datetime("us", "UTC")
_DROPPED = ("_pos", "_received_ns")


def transport_window(
    config: MqttTransportConfig | NatsTransportConfig | MemoryTransportConfig,
) -> int:
    """How many messages the transport hands out before some are acked (its window)."""
    if isinstance(config, MqttTransportConfig):
        return config.receive_maximum if config.qos == 1 else 1 << 30
    if isinstance(config, NatsTransportConfig):
        return config.max_ack_pending
    return config.capacity


class StreamProcessor:
    """Runs one stream pipeline (see the module docstring).

    ``transport`` / ``sink``: use these (already open) instead of building them from the
    config; the processor closes only what it built. ``idle_after``: seconds without a
    message before the watermark advances on its own (default: the larger of 1 s and
    ``sink.max_delay``).
    """

    def __init__(
        self,
        name: str,
        pipeline: StreamPipelineConfig,
        *,
        config: LooplineConfig,
        transport: Transport | None = None,
        sink: StreamSink | None = None,
        idle_after: float | None = None,
    ) -> None:
        from loopline.stream.detectors import build_detectors
        from loopline.stream.windows import WindowOperator

        self.name = name
        self.pipeline = pipeline
        self.config = config
        self.status = StreamStatus(pipeline=name)
        self.metrics = StreamMetrics(name)
        self._transport = transport
        self._sink = sink
        validate_steps(pipeline.transform)  # a malformed step fails before anything is read
        self._string_steps = [s for s in pipeline.transform if s.step in STRING_STEPS]
        self._value_steps = [s for s in pipeline.transform if s.step not in STRING_STEPS]
        contract = config.stream_contract(pipeline)
        self._engine = ContractEngine(contract) if contract is not None else None
        self._windows: list[WindowOperator] = [
            WindowOperator(
                window,
                pipeline.watermark,
                key=pipeline.device_field,
                time=pipeline.time_field,
                metrics=list(pipeline.metrics),
            )
            for window in pipeline.windows
        ]
        self._detectors: list[Detector] = build_detectors(pipeline.detectors, pipeline.metrics)
        self._memory = DedupeMemory(pipeline.sink.dedupe_window)
        self.batch_limit = max(
            1, min(pipeline.sink.max_rows, transport_window(pipeline.transport) // 3)
        )
        self.idle_after = (
            idle_after if idle_after is not None else max(1.0, pipeline.sink.max_delay)
        )
        self._alerts: AlertManager | None = None
        self._registry = DeviceRegistry(pipeline, config)
        self._run_id = uuid.uuid4().hex
        self._seq = 0
        self._taken = 0  # messages handed to process()
        self._writer: CommitWriter | None = None
        self._newest_event: datetime | None = None
        self._last_message = time.monotonic()
        self._stored_schema: Any = None
        self._no_quarantine = empty_quarantine()  # shared: frames are never changed in place

    # -- running -------------------------------------------------------------------------

    @property
    def sink(self) -> StreamSink:
        if self._sink is None:
            self._sink = StreamSink(self.name, self.pipeline, config=self.config)
        return self._sink

    def run(
        self,
        stop: threading.Event,
        *,
        max_messages: int | None = None,
        idle_exit: float | None = None,
        on_status: Callable[[StreamStatus], None] | None = None,
    ) -> StreamStatus:
        """Process messages until ``stop`` is set, ``max_messages`` were handled, or nothing
        arrived for ``idle_exit`` seconds; returns the final status."""
        from loopline.store.metadata import MetadataStore
        from loopline.stream.alerts import AlertManager

        own_sink, own_transport = self._sink is None, self._transport is None
        sink = self.sink
        metadata = MetadataStore(self.config.stores.metadata_url, base_dir=self.config.project_dir)
        transport = self._transport
        try:
            self._recover(sink)
            if transport is None:
                from loopline.stream.transports.factory import create_transport

                transport = create_transport(self.pipeline.transport)
                transport.open()
                self._transport = transport
            publish = transport.publish if self.pipeline.alerts.mqtt_topic else None
            self._alerts = AlertManager(
                self.pipeline.alerts,
                pipeline=self.name,
                metadata=metadata,
                publish=(lambda topic, body: publish(topic, body)) if publish else None,
            )
            if self.pipeline.metrics_port is not None:
                self.metrics.serve_metrics(self.pipeline.metrics_port)
            self._writer = CommitWriter(
                sink, transport, pipeline=self.pipeline, status=self.status, metrics=self.metrics
            )
            # pyarrow's first conversion of Python objects (each commit stamps its batch id)
            # imports pandas when it is installed: 0.2 s, paid here and not by a batch.
            pa.array([""])
            # Start-up garbage first, then keep collections off the long-lived objects
            # (modules, config, recovered state): a full collection over them stalled the
            # loop for up to 200 ms, the p99 latency at 5,000 msg/s.
            gc.collect()
            gc.freeze()
            self._loop(transport, sink, stop, max_messages, idle_exit, on_status)
            self._writer.drain()
        finally:
            gc.unfreeze()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self.metrics.close()
            if own_transport and transport is not None:
                transport.close()
                self._transport = None
            if own_sink:
                sink.close()
                self._sink = None
            metadata.close()
        return self.status

    def _loop(
        self,
        transport: Transport,
        sink: StreamSink,
        stop: threading.Event,
        max_messages: int | None,
        idle_exit: float | None,
        on_status: Callable[[StreamStatus], None] | None,
    ) -> None:
        self._last_message = time.monotonic()
        writer = self._require_writer()
        while not stop.is_set():
            writer.check()
            limit = self.batch_limit
            if max_messages is not None:
                limit = min(limit, max_messages - self._taken)
                if limit <= 0:
                    break
            deliveries = self._collect(transport, stop, limit)
            if deliveries:
                self.process(deliveries)  # the writer applies retention after the commit
                self._last_message = time.monotonic()
            else:
                quiet = time.monotonic() - self._last_message
                if quiet >= self.idle_after:
                    self._advance_idle(quiet)
                writer.drain()  # the sink is this thread's while nothing arrives
                sink.enforce_retention(keep_after=self._needed_since())
                if idle_exit is not None and quiet >= idle_exit:
                    break
            self.status.pending = transport.pending()
            self.metrics.set_lag(self.status.lag_s, self.status.pending)
            if on_status is not None:
                on_status(self.status)

    def _collect(self, transport: Transport, stop: threading.Event, limit: int) -> list[Delivery]:
        """One micro-batch: up to ``limit`` messages, or what came within ``max_delay``."""
        batch = transport.receive(limit, timeout=min(0.25, self.pipeline.sink.max_delay or 0.25))
        if not batch:
            return batch
        deadline = time.monotonic() + self.pipeline.sink.max_delay
        while len(batch) < limit and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch.extend(transport.receive(limit - len(batch), timeout=remaining))
        return batch

    # -- one micro-batch -----------------------------------------------------------------

    def process(self, deliveries: Sequence[Delivery]) -> None:
        """Decode, check, window and score one micro-batch, then hand it to the writer,
        which commits and acks it (inside :meth:`run` only)."""
        from loopline.stream.decode import decode_batch

        writer = self._require_writer()
        p = self.pipeline
        started = time.time()
        self._seq += 1
        batch_id = lineage.batch_id(self.sink.job, f"{self._run_id}:{self._seq}")
        now = datetime.now(UTC)
        decoded = decode_batch(
            deliveries,
            fmt=p.format,
            id_field=p.id_field,
            device_field=p.device_field,
            time_field=p.time_field,
        )
        frame = decoded.frame
        unique = frame.unique(subset=[p.id_field], keep="first", maintain_order=True)
        ids = unique[p.id_field]
        if unique.height:
            seen = self._memory.seen(ids, at=started)
            if seen.any():
                fresh = pl.Series(~seen)
                unique, ids = unique.filter(fresh), ids.filter(fresh)
        duplicates = frame.height - unique.height
        frame = unique.drop([c for c in _DROPPED if c in unique.columns]).with_columns(
            pl.lit(f"stream:{self.name}", dtype=pl.String).alias(lineage.SOURCE),
            pl.lit(batch_id, dtype=pl.String).alias(lineage.BATCH_ID),
            utc_literal(now).alias(lineage.INGESTED_AT),
        )
        checked = self._check(frame)
        good = self._registry.join(
            checked.data.sort(p.time_field, maintain_order=True),
            frame.columns,
            read_sink=self._read_sink_table,
        )
        quarantine = self._concat_quarantine(
            [
                rejects_to_quarantine(decoded.rejects, self.sink.source, batch_id, now),
                checked.quarantine,
            ]
        )
        windows, late_dropped, late_updated = self._window(good)
        anomalies = self._score(good)
        alerts = (
            self._alerts.offer(anomalies) if self._alerts is not None and anomalies.height else None
        )
        self._memory.remember(ids, at=time.time())
        self._taken += len(deliveries)
        self._saw(good)
        counts = {
            "invalid": len(decoded.rejects) + frame.height - good.height,
            "duplicate": duplicates,
            "late_dropped": late_dropped,
            "late_updated": late_updated,
            "window": windows.height,
            "anomaly": anomalies.height,
            "alert": 0 if alerts is None else alerts.height,
        }
        writer.submit(
            PreparedBatch(
                good,
                quarantine,
                windows,
                anomalies,
                self._watermarks(),
                batch_id,
                deliveries=deliveries,
                counts=counts,
                keep_after=self._needed_since(),
            )
        )

    def _require_writer(self) -> CommitWriter:
        if self._writer is None:
            raise StreamError(
                "the stream processor is not running",
                pipeline=self.name,
                hint="micro-batches are processed inside StreamProcessor.run()",
            )
        return self._writer

    def _saw(self, good: pl.DataFrame) -> None:
        """Note a handed-over batch's newest event and whether it adds stored columns."""
        if good.height == 0:
            return
        newest = good[self.pipeline.time_field].max()
        if isinstance(newest, datetime) and (
            self._newest_event is None or newest > self._newest_event
        ):
            self._newest_event = newest
        stored = self._stored_schema
        if stored is not None and not set(good.columns) <= set(stored.names):
            self._stored_schema = None  # its commit adds columns: read them after it

    def _check(self, frame: pl.DataFrame) -> StageResult:
        """Contract coercion and rules around the transform steps, as batch ingestion does."""
        schema = frame.schema
        metrics = [
            pl.col(m).cast(pl.Float64)
            for m in self.pipeline.metrics
            if m in schema and schema[m].is_numeric() and schema[m] != pl.Float64
        ]
        if metrics:
            frame = frame.with_columns(metrics)
        if frame.height == 0 and self._engine is None:  # infer types from real data only
            return StageResult(data=self._with_metrics(frame), quarantine=self._no_quarantine)
        stages: list[StageResult] = []
        if self._string_steps:
            stages.append(apply_steps(frame, self._string_steps, phase="string"))
            frame = stages[-1].data
        if self._engine is None:
            self._engine = ContractEngine.inferred(frame, self._stored())
        stages.append(self._engine.coerce(frame))
        if self._value_steps:
            stages.append(apply_steps(stages[-1].data, self._value_steps, phase="value"))
        stages.append(self._engine.validate(stages[-1].data, self._stored()))
        data = self._with_metrics(stages[-1].data)
        parts = [s.quarantine for s in stages if s.quarantine.height]
        return StageResult(data=data, quarantine=self._concat_quarantine(parts))

    def _with_metrics(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with a null column for each metric it lacks."""
        missing = self._missing_metrics(frame)
        return frame.with_columns(missing) if missing else frame

    def _concat_quarantine(self, parts: list[pl.DataFrame]) -> pl.DataFrame:
        parts = [part for part in parts if part.height]
        if len(parts) > 1:
            return pl.concat(parts, how="vertical_relaxed")
        return parts[0] if parts else self._no_quarantine

    def _missing_metrics(self, frame: pl.DataFrame) -> list[pl.Expr]:
        return [
            pl.lit(None, dtype=pl.Float64).alias(m)
            for m in self.pipeline.metrics
            if m not in frame.columns
        ]

    def _stored(self) -> Any:
        if self._stored_schema is None:
            self._require_writer().drain()  # the columns a batch in flight adds
            self._stored_schema = self.sink.destination.table_schema(
                self.pipeline.sink.readings_table
            )
        return self._stored_schema

    def _read_sink_table(self, table: str) -> pl.DataFrame:
        self._require_writer().drain()  # the sink is read on this thread
        return self.sink.read_table(table)

    def _window(self, good: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
        p = self.pipeline
        parts: list[pl.DataFrame] = []
        dropped = updated = 0
        if not self._windows or good.height == 0:
            return pl.DataFrame(), 0, 0
        batch = good.select(
            p.device_field,
            p.time_field,
            *[pl.col(m).cast(pl.Float64, strict=False) for m in p.metrics],
        )
        for operator in self._windows:
            out = operator.update(batch)
            dropped += out.late_dropped
            updated += out.late_updated
            if out.rows.height:
                parts.append(out.rows)
        rows = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
        return rows, dropped, updated

    def _score(self, good: pl.DataFrame) -> pl.DataFrame:
        p = self.pipeline
        if not self._detectors or good.height == 0:
            return empty_anomalies()
        devices = good[p.device_field].cast(pl.String)
        values: dict[str, pl.Series] = {}
        hits: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], str, str]] = []
        for detector in self._detectors:
            if detector.metric not in values:
                values[detector.metric] = good[detector.metric].cast(pl.Float64, strict=False)
            scores, flags = detector.score_many(devices, values[detector.metric])
            rows = np.flatnonzero(flags)
            if rows.size:
                hits.append((rows, scores[rows], detector.metric, detector.name))
        if not hits:
            return empty_anomalies()
        index = pl.Series(np.concatenate([h[0] for h in hits]))
        sizes = [h[0].size for h in hits]
        return pl.DataFrame(
            {
                "device": devices.gather(index),
                "metric": pl.Series([h[2] for h in hits], dtype=pl.String).gather(
                    np.repeat(np.arange(len(hits)), sizes)
                ),
                "detector": pl.Series([h[3] for h in hits], dtype=pl.String).gather(
                    np.repeat(np.arange(len(hits)), sizes)
                ),
                "event_time": good[p.time_field].gather(index),
                "value": pl.Series(
                    np.concatenate([values[h[2]].to_numpy()[h[0]] for h in hits]), dtype=pl.Float64
                ),
                "score": pl.Series(np.concatenate([h[1] for h in hits]), dtype=pl.Float64),
                "msg_id": good[p.id_field].cast(pl.String).gather(index),
            }
        )

    # -- watermarks, idle streams, recovery ----------------------------------------------

    def _watermarks(self) -> dict[str, str | None]:
        return {
            op_label: (op.watermark.isoformat() if op.watermark is not None else None)
            for op_label, op in zip(self._labels(), self._windows, strict=True)
        }

    def _labels(self) -> list[str]:
        return [w.label for w in self.pipeline.windows]

    def _needed_since(self) -> datetime | None:
        """The oldest event time recovery still reads (retention never deletes past it)."""
        marks = [
            op.watermark - timedelta(seconds=op.horizon) for op in self._windows if op.watermark
        ]
        return min(marks) if marks else None

    def _advance_idle(self, quiet: float) -> None:
        """Move the watermarks as if event time went on during ``quiet`` seconds."""
        if not self._windows or self._newest_event is None:
            return
        target = self._newest_event + timedelta(seconds=quiet - self.pipeline.watermark.delay)
        parts = [out.rows for op in self._windows if (out := op.advance(target)).rows.height]
        if not parts:
            return
        windows = pl.concat(parts, how="diagonal_relaxed")
        self._seq += 1
        batch_id = lineage.batch_id(self.sink.job, f"{self._run_id}:{self._seq}")
        self._require_writer().submit(
            PreparedBatch(
                self._empty_readings(),
                self._no_quarantine,
                windows,
                empty_anomalies(),
                self._watermarks(),
                batch_id,
                counts={"window": windows.height},
                keep_after=self._needed_since(),
            )
        )

    def _empty_readings(self) -> pl.DataFrame:
        p = self.pipeline
        return pl.DataFrame(
            schema={p.id_field: pl.String, p.device_field: pl.String, p.time_field: _UTC_US}
        )

    def _recover(self, sink: StreamSink) -> None:
        """Rebuild window state and the dedupe memory from what the sink holds."""
        p = self.pipeline
        state = sink.read_state() or {}
        marks: dict[str, Any] = state.get("watermarks") or {}
        restored: list[tuple[WindowOperator, datetime | None]] = []
        for label, op in zip(self._labels(), self._windows, strict=True):
            text = marks.get(label)
            restored.append((op, datetime.fromisoformat(text) if text else None))
        known = [wm - timedelta(seconds=op.horizon) for op, wm in restored if wm is not None]
        if known:
            rows = sink.read_readings(
                p.time_field, min(known), [p.device_field, p.time_field, *p.metrics]
            )
            if rows.height:
                rows = rows.with_columns(
                    (
                        pl.col(m).cast(pl.Float64)
                        if m in rows.columns
                        else pl.lit(None, pl.Float64)
                    ).alias(m)
                    for m in p.metrics
                ).select(p.device_field, p.time_field, *p.metrics)
            for op, wm in restored:
                op.restore(rows if rows.height else self._empty_window_rows(), wm)
            newest = [wm for _, wm in restored if wm is not None]
            self._newest_event = max(newest) + timedelta(seconds=p.watermark.delay)
            log.info("restored %d windows from %d stored readings", len(restored), rows.height)
        since = datetime.now(UTC) - timedelta(seconds=p.sink.dedupe_window)
        recent = sink.read_readings(lineage.INGESTED_AT, since, [p.id_field])
        if recent.height:
            self._memory.remember(recent[p.id_field], at=time.time())
            log.info("dedupe memory seeded with %d recent ids", recent.height)

    def _empty_window_rows(self) -> pl.DataFrame:
        p = self.pipeline
        schema: dict[str, pl.DataType] = {p.device_field: pl.String(), p.time_field: _UTC_US}
        schema.update({m: pl.Float64() for m in p.metrics})
        return pl.DataFrame(schema=schema)


__all__ = ["StreamProcessor", "transport_window"]
