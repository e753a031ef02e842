"""The stream processor: one loop that turns broker messages into stored, windowed, scored rows.

Per micro-batch (committed when it holds ``sink.max_rows`` messages, half the transport's
unacknowledged window, or its first message waited ``sink.max_delay``):

receive → decode → drop duplicates (within the batch, and ids remembered by
:class:`~loopline.stream.dedupe.DedupeMemory`) → contract coerce / validate (the pipeline's
contract, else one inferred from the first batch) → ``transform`` (string steps, then value
steps) → enrich (left join of ``enrich_table`` on the device column, reloaded every minute)
→ event-time windows → detectors per metric → alerts → sink commit (readings, windows,
anomalies, quarantine and watermarks in one warehouse transaction) → ack → remember the ids.

Delivery guarantees: messages are acked only after the commit that holds them, so a crash
anywhere (kill -9 included) loses nothing: the broker redelivers what was not acked. Nothing
is stored twice: remembered ids drop redeliveries (seeded on start from the readings
ingested within ``sink.dedupe_window``), windows are merged by key, and a batch's anomalies
are stored in the transaction of the readings that raised them (on the lake, in separate
commits: merged by key).

Recovery on start: the watermarks committed with the last batch are read back, and every
window operator is rebuilt from the stored readings not older than its watermark − horizon.
Detector state is not persisted: after a restart each device warms up again (a reading is
scored only while it is not stored, so its anomalies are never stored twice).

Quiet streams: when nothing arrives for ``idle_after`` seconds, event time is assumed to go
on at the wall-clock rate, so the watermark moves to (newest event seen + seconds of quiet
− watermark delay) and the windows that this closes are emitted and committed.

Backpressure: the loop pulls from the transport only when it is ready for the next batch and
the transports bound their own unacked messages, so a slow sink slows intake; nothing here
buffers without bound. Setting ``stop`` ends :meth:`StreamProcessor.run` after the current
batch is committed and acked (the CLI sets it on SIGTERM).

>>> from loopline.config import LooplineConfig
>>> from loopline.config.streams import StreamPipelineConfig
>>> pipe = StreamPipelineConfig.model_validate({"transport": {"kind": "memory"},
...     "metrics": ["temperature"], "windows": [{"kind": "tumbling", "size": "10s"}]})
>>> StreamProcessor("demo", pipe, config=LooplineConfig()).batch_limit
5000
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from loopline import lineage
from loopline.config import STRING_STEPS, LooplineConfig
from loopline.config.streams import (
    MemoryTransportConfig,
    MqttTransportConfig,
    NatsTransportConfig,
    StreamPipelineConfig,
)
from loopline.errors import StoreError, TransientSinkError
from loopline.ingest.cleanse import apply_steps, validate_steps
from loopline.ingest.contract import ContractEngine
from loopline.ingest.quarantine import StageResult, empty_quarantine
from loopline.stream.dedupe import DedupeMemory
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

ENRICH_REFRESH_S = 60.0
COMMIT_ATTEMPTS = 3
_UTC_US = pl.Datetime("us", "UTC")
_DROPPED = ("_pos", "_received_ns")
_STATUS_FIELDS = {
    "invalid": "invalid",
    "duplicate": "duplicates",
    "late_dropped": "late_dropped",
    "late_updated": "late_updated",
    "window": "windows",
    "anomaly": "anomalies",
    "alert": "alerts",
}
"""Prometheus outcome label -> :class:`StreamStatus` counter."""


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
            1, min(pipeline.sink.max_rows, transport_window(pipeline.transport) // 2)
        )
        self.idle_after = (
            idle_after if idle_after is not None else max(1.0, pipeline.sink.max_delay)
        )
        self._alerts: AlertManager | None = None
        self._registry: pl.DataFrame | None = None
        self._registry_loaded = -ENRICH_REFRESH_S
        self._run_id = uuid.uuid4().hex
        self._seq = 0
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
            self._loop(transport, sink, stop, max_messages, idle_exit, on_status)
        finally:
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
        while not stop.is_set():
            limit = self.batch_limit
            if max_messages is not None:
                limit = min(limit, max_messages - self.status.messages)
                if limit <= 0:
                    break
            deliveries = self._collect(transport, stop, limit)
            if deliveries:
                self.process(deliveries)
                self._last_message = time.monotonic()
            else:
                quiet = time.monotonic() - self._last_message
                if quiet >= self.idle_after:
                    self._advance_idle(quiet)
                if idle_exit is not None and quiet >= idle_exit:
                    break
            self.status.pending = transport.pending()
            self.metrics.set_lag(self.status.lag_s, self.status.pending)
            sink.enforce_retention(keep_after=self._needed_since())
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
        """Decode, check, window, score, commit and ack one micro-batch."""
        from loopline.stream.decode import decode_batch

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
        good = self._enrich(checked.data.sort(p.time_field, maintain_order=True), frame.columns)
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
        committed = self._commit(good, quarantine, windows, anomalies, batch_id)
        self._dead_letter(quarantine)
        self._memory.remember(ids, at=time.time())
        transport = self._transport
        if transport is not None:
            transport.ack(deliveries)
        counts = {
            "invalid": len(decoded.rejects) + frame.height - good.height,
            "duplicate": duplicates,
            "late_dropped": late_dropped,
            "late_updated": late_updated,
            "window": windows.height,
            "anomaly": anomalies.height,
            "alert": 0 if alerts is None else alerts.height,
        }
        self._account(len(deliveries), good, committed, counts)

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
            self._stored_schema = self.sink.destination.table_schema(
                self.pipeline.sink.readings_table
            )
        return self._stored_schema

    def _enrich(self, good: pl.DataFrame, payload: list[str]) -> pl.DataFrame:
        """Join the registry's columns the payload does not carry (a payload value wins)."""
        table = self.pipeline.enrich_table
        if table is None or good.height == 0:
            return good
        if time.monotonic() - self._registry_loaded >= ENRICH_REFRESH_S:
            self._registry_loaded = time.monotonic()
            self._registry = self._load_registry(table)
        registry = self._registry
        if registry is None:
            return good
        device = self.pipeline.device_field
        # Validation against the stored readings may have added them as nulls: replace those.
        extra = [c for c in registry.columns if c != device and c not in payload]
        if not extra:
            return good
        base = good.drop([c for c in extra if c in good.columns])
        return base.join(registry.select(device, *extra), on=device, how="left")

    def _load_registry(self, table: str) -> pl.DataFrame | None:
        """The device registry from the warehouse (the sink's, or the project's one when
        the sink is the lake)."""
        device = self.pipeline.device_field
        try:
            if self.pipeline.sink.kind == "warehouse":
                frame = self.sink.read_table(table)
            else:
                from loopline.store.warehouse import open_warehouse

                warehouse = open_warehouse(
                    self.config.stores.warehouse_url, base_dir=self.config.project_dir
                )
                try:
                    loaded = pl.from_arrow(warehouse.read_table(table))
                finally:
                    warehouse.close()
                assert isinstance(loaded, pl.DataFrame)
                frame = loaded
        except StoreError as exc:
            log.warning(
                "enrichment table %r cannot be read, readings go un-enriched: %s", table, exc
            )
            return None
        if device not in frame.columns:
            log.warning("enrichment table %r has no %r column; not joined", table, device)
            return None
        keep = [c for c in frame.columns if not lineage.is_lineage(c)]
        return (
            frame.select(keep)
            .with_columns(pl.col(device).cast(pl.String))
            .unique(subset=[device], keep="last", maintain_order=True)
        )

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

    def _commit(
        self,
        good: pl.DataFrame,
        quarantine: pl.DataFrame,
        windows: pl.DataFrame,
        anomalies: pl.DataFrame,
        batch_id: str,
    ) -> float:
        """Commit with retries on a lost connection; returns when it finished (epoch s)."""
        started = time.perf_counter()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.sink.commit(
                    readings=good,
                    quarantine=quarantine,
                    windows=windows,
                    anomalies=anomalies,
                    watermarks=self._watermarks(),
                    batch_id=batch_id,
                    new_batch=attempt == 1,  # a lost connection may have committed it
                    new_anomalies=True,  # scored readings passed the dedupe: none is stored
                )
                break
            except TransientSinkError as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning("commit failed (attempt %d), retrying: %s", attempt, exc)
                time.sleep(0.5 * attempt)
        stored = self._stored_schema
        if good.height and stored is not None and not set(good.columns) <= set(stored.names):
            self._stored_schema = None  # the commit added columns: read the schema again
        seconds = time.perf_counter() - started
        self.status.last_commit_s = seconds
        self.metrics.observe_commit(seconds)
        return time.time()

    def _dead_letter(self, quarantine: pl.DataFrame) -> None:
        topic = self.pipeline.dead_letter.topic
        if topic is None or quarantine.height == 0 or self._transport is None:
            return
        body = quarantine.select("_rule", "_column", "_raw_value", "_record", lineage.SOURCE)
        for line in body.write_ndjson().splitlines():
            self._transport.publish(topic, line.encode())

    def _account(
        self, received: int, good: pl.DataFrame, committed: float, counts: dict[str, int]
    ) -> None:
        """Add one committed batch to the status and the Prometheus metrics."""
        s = self.status
        s.add_batch(received=received, stored=good.height, at=committed)
        for outcome, n in {"received": received, "stored": good.height, **counts}.items():
            self.metrics.count(outcome, n)
            if name := _STATUS_FIELDS.get(outcome):
                setattr(s, name, getattr(s, name) + n)
        if good.height:
            times = good[self.pipeline.time_field].dt.epoch("us").to_numpy().astype(np.float64)
            self.metrics.latency.observe_many(committed - times / 1e6)
            newest = good[self.pipeline.time_field].max()
            if isinstance(newest, datetime):
                if self._newest_event is None or newest > self._newest_event:
                    self._newest_event = newest
                s.lag_s = (datetime.now(UTC) - self._newest_event).total_seconds()

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
        readings = self._empty_readings()
        self._commit(readings, self._no_quarantine, windows, empty_anomalies(), batch_id)
        self.status.windows += windows.height
        self.metrics.count("window", windows.height)

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
