"""Stores a stream's micro-batches on a thread of its own while the processor prepares the next.

The processor decodes, checks, windows and scores micro-batch N+1 while this writer commits
micro-batch N: on a busy stream the commit no longer adds to every batch's cycle, so batches
stay small and each message waits less. For each :class:`PreparedBatch`, in the order they
were handed over, the writer:

commit (one sink transaction, retried on a lost connection) → publish the quarantined
records to the dead-letter topic → ack the batch's deliveries → count it in the status and
the Prometheus metrics → retention.

Guarantees kept from the one-thread loop: a delivery is acked only after the commit that
holds it, and batches are committed and acked strictly in order. :meth:`CommitWriter.submit`
blocks while the previous batch is still being stored (a one-batch hand-off), so at most one
batch is being stored and one prepared: a slow sink still slows intake, and nothing queues
without bound. A failed commit stops the writer: nothing after it is committed or acked, and
the next :meth:`~CommitWriter.submit`, :meth:`~CommitWriter.check` or
:meth:`~CommitWriter.drain` raises the failure in the processor's thread.

The sink's connection is not shared between threads: whoever else reads the sink (the
processor's schema and registry reads, retention when the stream is idle) calls
:meth:`CommitWriter.drain` first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from loopline import lineage
from loopline.errors import TransientSinkError

if TYPE_CHECKING:
    from loopline.config.streams import StreamPipelineConfig
    from loopline.stream.status import StreamMetrics, StreamStatus
    from loopline.stream.storage import StreamSink
    from loopline.stream.transport import Delivery, Transport

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 3
STATUS_FIELDS = {
    "invalid": "invalid",
    "duplicate": "duplicates",
    "late_dropped": "late_dropped",
    "late_updated": "late_updated",
    "window": "windows",
    "anomaly": "anomalies",
    "alert": "alerts",
}
"""Prometheus outcome label -> :class:`StreamStatus` counter."""


@dataclass(slots=True)
class PreparedBatch:
    """One micro-batch ready to store, with the state it leaves the pipeline in.

    ``deliveries`` is ``None`` for a commit that carries no messages (window rows closed
    by the watermark of a quiet stream). ``watermarks`` and ``keep_after`` (the oldest
    event time recovery still reads) are those of the window operators right after this
    batch: the next batch moves them on before this one is committed.
    """

    readings: pl.DataFrame
    quarantine: pl.DataFrame
    windows: pl.DataFrame
    anomalies: pl.DataFrame
    watermarks: dict[str, str | None]
    batch_id: str
    deliveries: Sequence[Delivery] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    keep_after: datetime | None = None


class CommitWriter:
    """Commits, dead-letters, acks and counts prepared micro-batches (see the module doc).

    ``transport`` acks the deliveries and publishes dead letters (``None``: no acks).
    """

    def __init__(
        self,
        sink: StreamSink,
        transport: Transport | None,
        *,
        pipeline: StreamPipelineConfig,
        status: StreamStatus,
        metrics: StreamMetrics,
    ) -> None:
        self.sink = sink
        self.transport = transport
        self.pipeline = pipeline
        self.status = status
        self.metrics = metrics
        self._newest: datetime | None = None
        self._changed = threading.Condition()
        self._batch: PreparedBatch | None = None  # handed over, not yet stored
        self._failure: Exception | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._work, name="loopline-commit-writer", daemon=True
        )
        self._thread.start()

    # -- the processor's side ------------------------------------------------------------

    def submit(self, batch: PreparedBatch) -> None:
        """Hand ``batch`` over once the previous one is stored (raises a writer failure)."""
        with self._changed:
            self._changed.wait_for(lambda: self._batch is None or self._failure is not None)
            self.check()
            self._batch = batch
            self._changed.notify_all()

    def check(self) -> None:
        """Raise the failure that stopped the writer, if one did."""
        if self._failure is not None:
            raise self._failure

    def drain(self) -> None:
        """Wait until every batch handed over is stored (raises a writer failure)."""
        with self._changed:
            self._changed.wait_for(lambda: self._batch is None or self._failure is not None)
        self.check()

    def close(self) -> None:
        """Let the batch being stored finish, then stop the thread (raises nothing)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    # -- the writer's side ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._batch is not None or self._closed)
                batch = self._batch
            if batch is None:
                return
            try:
                self.store(batch)
            except Exception as exc:  # noqa: BLE001 - raised again in the processor's thread
                with self._changed:
                    self._failure = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self._batch = None
                self._changed.notify_all()

    def store(self, batch: PreparedBatch) -> None:
        """Commit ``batch``, then dead-letter, ack, count and apply retention."""
        committed = self._commit(batch)
        transport = self.transport
        if batch.deliveries is not None:
            self._dead_letter(batch.quarantine)
            if transport is not None:
                transport.ack(batch.deliveries)
        self._account(batch, committed)
        self.sink.enforce_retention(keep_after=batch.keep_after)

    def _commit(self, batch: PreparedBatch) -> float:
        """Commit, retried on a new connection when one is lost; returns when it finished
        (epoch s)."""
        started = time.perf_counter()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.sink.commit(
                    readings=batch.readings,
                    quarantine=batch.quarantine,
                    windows=batch.windows,
                    anomalies=batch.anomalies,
                    watermarks=batch.watermarks,
                    batch_id=batch.batch_id,
                    new_batch=attempt == 1,  # a lost connection may have committed it
                    new_anomalies=True,  # scored readings passed the dedupe: none is stored
                )
                break
            except TransientSinkError as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning("commit failed (attempt %d), retrying: %s", attempt, exc)
                time.sleep(0.5 * attempt)
                self.sink.reopen()  # the lost connection cannot run the retry
        seconds = time.perf_counter() - started
        self.status.last_commit_s = seconds
        self.metrics.observe_commit(seconds)
        return time.time()

    def _dead_letter(self, quarantine: pl.DataFrame) -> None:
        topic = self.pipeline.dead_letter.topic
        if topic is None or quarantine.height == 0 or self.transport is None:
            return
        body = quarantine.select("_rule", "_column", "_raw_value", "_record", lineage.SOURCE)
        for line in body.write_ndjson().splitlines():
            self.transport.publish(topic, line.encode())

    def _account(self, batch: PreparedBatch, committed: float) -> None:
        """Add one committed batch to the status and the Prometheus metrics."""
        s = self.status
        good = batch.readings
        counts = batch.counts
        if batch.deliveries is not None:
            received = len(batch.deliveries)
            s.add_batch(received=received, stored=good.height, at=committed)
            counts = {"received": received, "stored": good.height, **counts}
        for outcome, n in counts.items():
            self.metrics.count(outcome, n)
            if name := STATUS_FIELDS.get(outcome):
                setattr(s, name, getattr(s, name) + n)
        if good.height:
            times = good[self.pipeline.time_field].dt.epoch("us").to_numpy().astype(np.float64)
            self.metrics.latency.observe_many(committed - times / 1e6)
            newest = good[self.pipeline.time_field].max()
            if isinstance(newest, datetime):
                if self._newest is None or newest > self._newest:
                    self._newest = newest
                s.lag_s = (datetime.now(UTC) - self._newest).total_seconds()


__all__ = ["COMMIT_ATTEMPTS", "CommitWriter", "PreparedBatch"]
