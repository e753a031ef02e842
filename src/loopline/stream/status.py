"""How a running stream pipeline is doing: counters for the status line and Prometheus.

:class:`StreamStatus` is the plain snapshot the processor hands to ``on_status`` after each
micro-batch (and returns from ``run``); :class:`StreamMetrics` exports the same numbers
as Prometheus metrics on a registry owned by one processor (no global state, so two
processors in one process, or a test, never share counters). Per-message latencies are
recorded a whole batch at a time with NumPy, not one ``observe`` call per message.

>>> status = StreamStatus(pipeline="sensors")
>>> status.add_batch(received=10, stored=8, at=100.0)
>>> status.add_batch(received=10, stored=10, at=101.0)
>>> status.messages, status.stored, status.batches
(20, 18, 2)
>>> metrics = StreamMetrics("sensors")
>>> metrics.count("stored", 18)
>>> metrics.registry.get_sample_value(
...     "loopline_stream_messages_total", {"pipeline": "sensors", "outcome": "stored"})
18.0
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from loopline.errors import MissingDependencyError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

RATE_SECONDS = 5.0
"""The messages-per-second figure is the rate over this many recent seconds."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class StreamStatus:
    """Counters since the processor started (``lag_s``: now − newest event time stored)."""

    pipeline: str
    messages: int = 0
    stored: int = 0
    invalid: int = 0
    duplicates: int = 0
    late_dropped: int = 0
    late_updated: int = 0
    anomalies: int = 0
    alerts: int = 0
    windows: int = 0
    batches: int = 0
    msgs_per_s: float = 0.0
    lag_s: float | None = None
    pending: int = 0
    last_commit_s: float = 0.0
    started_at: float = field(default_factory=time.time)
    _recent: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def add_batch(self, *, received: int, stored: int, at: float) -> None:
        """Count one committed micro-batch and update the recent rate."""
        self.messages += received
        self.stored += stored
        self.batches += 1
        self._recent.append((at, received))
        while self._recent and self._recent[0][0] < at - RATE_SECONDS:
            self._recent.popleft()
        span = max(at - self._recent[0][0], min(at - self.started_at, RATE_SECONDS), 1e-3)
        self.msgs_per_s = sum(n for _, n in self._recent) / span

    def line(self) -> str:
        """The one-line summary the CLI prints (``loopline stream run``)."""
        lag = "-" if self.lag_s is None else f"{self.lag_s:.1f}s"
        return (
            f"{self.pipeline}: {self.msgs_per_s:,.0f} msg/s, {self.messages:,} msgs, "
            f"{self.stored:,} stored, lag {lag}, pending {self.pending}, "
            f"invalid {self.invalid}, dup {self.duplicates}, "
            f"late {self.late_dropped}+{self.late_updated}, "
            f"anomalies {self.anomalies}, alerts {self.alerts}, windows {self.windows}"
        )


class _BulkHistogram:
    """A Prometheus histogram fed a NumPy array at a time (a custom collector)."""

    def __init__(self, name: str, documentation: str, pipeline: str, buckets: tuple[float, ...]):
        self.name, self.documentation, self.pipeline = name, documentation, pipeline
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self.total = 0.0

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        values = values[np.isfinite(values)]
        if values.size:
            index = np.searchsorted(self.bounds, values, side="left")
            self.counts += np.bincount(index, minlength=self.counts.size)
            self.total += float(values.sum())

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=["pipeline"])
        cumulative = np.cumsum(self.counts)
        buckets = [(f"{b:g}", float(c)) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        family.add_metric([self.pipeline], buckets, self.total)
        yield family


class StreamMetrics:
    """Prometheus metrics of one processor, on its own ``CollectorRegistry``.

    ``loopline_stream_messages_total{pipeline,outcome}`` (outcome: received, stored,
    invalid, duplicate, late_dropped, late_updated, anomaly, alert, window),
    ``loopline_stream_lag_seconds``, ``loopline_stream_pending_messages``,
    ``loopline_stream_batch_commit_seconds`` and ``loopline_stream_latency_seconds``
    (commit time − event time, per message).
    """

    def __init__(self, pipeline: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:  # pragma: no cover - the stream extra is installed in tests
            raise MissingDependencyError("prometheus-client", "stream") from exc
        self.pipeline = pipeline
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        self._messages = Counter(
            "loopline_stream_messages",
            "Messages handled by a stream pipeline, by outcome.",
            ["pipeline", "outcome"],
            registry=self.registry,
        )
        self._lag = Gauge(
            "loopline_stream_lag_seconds",
            "Now minus the newest event time stored.",
            ["pipeline"],
            registry=self.registry,
        )
        self._pending = Gauge(
            "loopline_stream_pending_messages",
            "Messages the transport received but the processor has not taken yet.",
            ["pipeline"],
            registry=self.registry,
        )
        self._commit = Histogram(
            "loopline_stream_batch_commit_seconds",
            "Seconds to commit one micro-batch to the sink.",
            ["pipeline"],
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.latency = _BulkHistogram(
            "loopline_stream_latency_seconds",
            "End-to-end latency: commit time minus the reading's event time.",
            pipeline,
            LATENCY_BUCKETS,
        )
        self.registry.register(self.latency)
        self._server: WSGIServer | None = None

    def count(self, outcome: str, n: int) -> None:
        if n:
            self._messages.labels(self.pipeline, outcome).inc(n)

    def set_lag(self, lag_s: float | None, pending: int) -> None:
        if lag_s is not None:
            self._lag.labels(self.pipeline).set(lag_s)
        self._pending.labels(self.pipeline).set(pending)

    def observe_commit(self, seconds: float) -> None:
        self._commit.labels(self.pipeline).observe(seconds)

    def serve_metrics(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP on ``port`` (0: a free one); returns the port."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP server, if one was started."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["StreamMetrics", "StreamStatus"]
