"""Real-time pipelines in ``loopline.yaml``: transport, decoding, windows, detectors, alerts, sink.

A stream pipeline reads device messages from MQTT (or NATS JetStream partitions fed by the
gateway), checks them with the same contracts as batch ingestion, windows and scores them
and lands readings, window aggregates and anomalies in the warehouse or lake.

>>> p = StreamPipelineConfig.model_validate({
...     "transport": {"kind": "mqtt", "topics": ["sensors/+/+"]},
...     "windows": [{"kind": "tumbling", "size": "1m"}],
...     "metrics": ["temperature"]})
>>> p.windows[0].size, p.watermark.delay, p.transport.qos
(60.0, 5.0, 1)
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from loopline.config.cleanse import CleanseStepSpec
from loopline.config.contracts import ContractConfig

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def duration_seconds(value: object) -> float:
    """Seconds in ``value``: a number of seconds or a string such as ``250ms``, ``5s``, ``2m``.

    >>> duration_seconds("2m"), duration_seconds(1.5), duration_seconds("250ms")
    (120.0, 1.5, 0.25)
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 2m, 1h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _SECONDS[match.group(2) or "s"]
    else:
        raise ValueError(f"expected a duration such as 5s, 2m, 1h or 7d, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(duration_seconds)]
"""Seconds; YAML may say ``250ms``, ``5s``, ``2m``, ``1h``, ``7d`` or a bare number."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsOptions(_Spec):
    """TLS for a broker connection; files are PEM. ``insecure`` skips hostname checks."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class MqttTransportConfig(_Spec):
    """An MQTT 5 (or 3.1.1) broker. ``topics`` are subscribed when the pipeline reads.

    ``shared_group`` turns each topic into ``$share/<group>/<topic>`` so several processors
    split the messages. ``session_expiry`` > 0 with a fixed ``client_id`` keeps a persistent
    session: QoS 1 messages published while the processor is down are delivered when it
    comes back. ``receive_maximum`` bounds the unacknowledged messages the broker sends.
    """

    kind: Literal["mqtt"] = "mqtt"
    url: str = "mqtt://127.0.0.1:1883"
    topics: list[str] = Field(default_factory=list)
    qos: Literal[0, 1] = 1
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    shared_group: str | None = None
    session_expiry: Duration = 3600.0
    receive_maximum: int = Field(10_000, ge=1, le=65535)
    keepalive: int = Field(30, ge=5)
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsOptions | None = None


class NatsTransportConfig(_Spec):
    """A NATS JetStream stream whose subjects are ``<subject_prefix>.<partition>``.

    The gateway publishes each device's messages to partition ``hash(device) % partitions``;
    worker ``worker`` of ``workers`` consumes partitions ``p`` with ``p % workers == worker``
    through one durable pull consumer per partition. ``dedupe_window`` is JetStream's
    duplicate window for ``Nats-Msg-Id``; a message not acked within ``ack_wait`` is
    redelivered.
    """

    kind: Literal["nats"] = "nats"
    url: str = "nats://127.0.0.1:4222"
    stream: str = "LOOPLINE_SENSORS"
    subject_prefix: str = "loopline.sensors"
    partitions: int = Field(8, ge=1, le=1024)
    workers: int = Field(1, ge=1)
    worker: int = Field(0, ge=0)
    durable: str = "loopline"
    ack_wait: Duration = 30.0
    max_ack_pending: int = Field(20000, ge=1)
    dedupe_window: Duration = 120.0
    max_age: Duration = 0.0
    fetch_batch: int = Field(500, ge=1)
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    tls: TlsOptions | None = None

    @model_validator(mode="after")
    def _worker_in_range(self) -> NatsTransportConfig:
        if self.worker >= self.workers:
            raise ValueError(f"worker {self.worker} is out of range for workers={self.workers}")
        return self


class MemoryTransportConfig(_Spec):
    """An in-process queue (the embedded default when no broker runs; tests, demos)."""

    kind: Literal["memory"] = "memory"
    name: str = "default"
    capacity: int = Field(100_000, ge=1)


TransportConfig = Annotated[
    MqttTransportConfig | NatsTransportConfig | MemoryTransportConfig, Field(discriminator="kind")
]


class GatewayConfig(_Spec):
    """``loopline stream gateway``: MQTT device topics → JetStream partitions by device.

    ``device_from_topic`` names the topic level holding the device id (``sensors/{site}/{device}``
    → level 2, counted from 0); without it the payload's ``device_field`` is read.
    """

    mqtt: MqttTransportConfig
    nats: NatsTransportConfig
    device_from_topic: int | None = 2
    device_field: str = "device"
    id_field: str = "msg_id"


class WatermarkConfig(_Spec):
    """Event-time progress: watermark = newest event time seen − ``delay``.

    A window is emitted once the watermark passes its end. Events up to ``allowed_lateness``
    behind the watermark still count: ``late_policy: update`` re-emits the window they fall
    in, ``drop`` counts them as late and leaves the window as emitted. Older events are
    always dropped and counted.
    """

    delay: Duration = 5.0
    allowed_lateness: Duration = 30.0
    late_policy: Literal["drop", "update"] = "update"


Aggregate = Literal["count", "mean", "min", "max", "std", "p50", "p90", "p95", "p99"]
DEFAULT_AGGREGATES: tuple[Aggregate, ...] = ("count", "mean", "min", "max", "std", "p50", "p95")


class WindowConfig(_Spec):
    """One event-time window per device: ``tumbling`` (size), ``sliding`` (size, slide) or
    ``session`` (gap of inactivity; ``size``, when given, is the longest a session may run
    before it is cut: 1 h by default)."""

    name: str | None = None
    kind: Literal["tumbling", "sliding", "session"] = "tumbling"
    size: Duration | None = None
    slide: Duration | None = None
    gap: Duration | None = None
    aggregates: list[Aggregate] = Field(default_factory=lambda: list(DEFAULT_AGGREGATES))

    @model_validator(mode="after")
    def _shape(self) -> WindowConfig:
        if self.kind in ("tumbling", "sliding") and not self.size:
            raise ValueError(f"a {self.kind} window needs 'size' (e.g. 1m)")
        if self.kind == "sliding" and not self.slide:
            raise ValueError("a sliding window needs 'slide' (e.g. 10s)")
        if self.kind == "sliding" and self.size and self.slide and self.slide > self.size:
            raise ValueError("'slide' cannot be longer than 'size'")
        if self.kind == "session" and not self.gap:
            raise ValueError("a session window needs 'gap' (e.g. 30s)")
        return self

    @property
    def label(self) -> str:
        """The window's name in the windows table (given, or built from its shape)."""
        if self.name:
            return self.name
        if self.kind == "session":
            return f"session_{self.gap:g}s"
        if self.kind == "sliding":
            return f"sliding_{self.size:g}s_{self.slide:g}s"
        return f"tumbling_{self.size:g}s"


class DetectorConfig(_Spec):
    """An online anomaly detector run per device on each of the pipeline's ``metrics``.

    - ``zscore``: robust rolling z-score, |x − median| / (1.4826·MAD) over the last
      ``window`` readings; anomalous above ``threshold``.
    - ``ewma``: exponentially weighted mean / variance with ``alpha``; z above ``threshold``.
    - ``hst``: River's Half-Space Trees (``trees``, ``height``, ``window``: the reference
      mass) on the reading's deviation from the device's exponentially weighted mean
      (``alpha``) in units of its weighted std, mapped into [0, 1]; score in [0, 1],
      anomalous above ``threshold``, whose default ``1 − 3.2 / 2**height`` (0.95 at the
      default height 6) follows the height because HST's score does.
    - ``fixed``: a plain bound (``low`` / ``high``), the baseline the others are judged by.
    ``warmup`` readings per device are scored but never flagged.
    """

    kind: Literal["zscore", "ewma", "hst", "fixed"]
    threshold: float | None = None
    window: int = Field(120, ge=8)
    alpha: float = Field(0.05, gt=0, le=1)
    trees: int = Field(10, ge=1)
    height: int = Field(6, ge=1, le=16)
    low: float | None = None
    high: float | None = None
    warmup: int = Field(30, ge=0)
    metrics: list[str] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> DetectorConfig:
        if self.kind == "fixed" and self.low is None and self.high is None:
            raise ValueError("a fixed detector needs 'low' and / or 'high'")
        return self


class AlertConfig(_Spec):
    """Where anomalies become alerts: at most one per device, metric and detector per
    ``cooldown``; to the metadata database always, a webhook and an MQTT topic when set."""

    cooldown: Duration = 300.0
    webhook_url: str | None = None
    mqtt_topic: str | None = None
    min_detectors: int = Field(1, ge=1)


class StreamSinkConfig(_Spec):
    """Where readings, window aggregates and anomalies land, in micro-batches.

    A micro-batch is committed when it holds ``max_rows`` readings or its oldest message
    waited ``max_delay``. Rows older than ``retention`` (by event time) are deleted
    periodically; ``0`` keeps everything. ``dedupe_window`` bounds the message ids
    remembered for dedupe (seeded from the stored readings after a restart).
    """

    kind: Literal["warehouse", "lake"] = "warehouse"
    readings_table: str = "readings"
    windows_table: str = "window_aggregates"
    anomalies_table: str = "anomalies"
    max_rows: int = Field(5000, ge=1)
    max_delay: Duration = 0.5
    retention: Duration = 0.0
    dedupe_window: Duration = 600.0


class DeadLetterConfig(_Spec):
    """Invalid messages also go to this MQTT topic / NATS subject (they are always stored in
    the quarantine table with the reason)."""

    topic: str | None = None


class StreamPipelineConfig(_Spec):
    """One real-time pipeline: ``loopline stream run NAME``."""

    transport: TransportConfig
    format: Literal["json", "msgpack"] = "json"
    id_field: str = "msg_id"
    device_field: str = "device"
    time_field: str = "ts"
    metrics: list[str] = Field(min_length=1)
    contract: str | ContractConfig | None = None
    transform: list[CleanseStepSpec] = Field(default_factory=list)
    enrich_table: str | None = None
    windows: list[WindowConfig] = Field(default_factory=list)
    watermark: WatermarkConfig = Field(default_factory=WatermarkConfig)
    detectors: list[DetectorConfig] = Field(
        default_factory=lambda: [DetectorConfig(kind="zscore", threshold=4.0)]
    )
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    sink: StreamSinkConfig = Field(default_factory=StreamSinkConfig)
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    metrics_port: int | None = None
