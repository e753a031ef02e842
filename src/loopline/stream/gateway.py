"""MQTT → NATS JetStream gateway: device topics in, one JetStream partition per device out.

Devices speak MQTT; the processors scale out on JetStream partitions. The gateway reads a
batch from MQTT, publishes each message to ``<subject_prefix>.<partition_of(device)>`` with
a ``Nats-Msg-Id`` header, waits until JetStream confirmed the whole batch and only then
acks the MQTT messages. A gateway that dies before that gets the batch again from its
persistent MQTT session and publishes it again; JetStream's duplicate window drops the
copies, so consumers see each message once (at-least-once into JetStream, deduplicated).

The device comes from topic level ``device_from_topic`` (``sensors/{site}/{device}`` → 2),
or from the payload's ``device_field`` when that is ``None``. The message id is the
payload's ``id_field`` (or the first 24 hex chars of the payload's SHA-256, as the decoder
does), prefixed by the device, because payload ids are often unique per device only.

A message without a device (topic too short, payload without the field or not JSON) is
*unroutable*: it is counted in :attr:`GatewayStats.unroutable`, logged as a warning and
acked, i.e. dropped — a gateway cannot partition it, and redelivering it forever would
stall the batch.

>>> message_id(b'{"msg_id": "d7-000001", "device": "d7"}', "msg_id")
'd7-000001'
>>> device_of("sensors/s1/d7", b"{}", level=2, field="device")
'd7'
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from loopline.config.streams import GatewayConfig
from loopline.errors import TransportError
from loopline.stream.transport import Delivery, Transport
from loopline.stream.transports.nats import NatsTransport, partition_of

__all__ = ["Gateway", "GatewayStats", "device_of", "message_id", "run_gateway"]

logger = logging.getLogger(__name__)

_RETRY_PAUSE = 1.0


@dataclass
class GatewayStats:
    """What a gateway forwarded: messages per partition, unroutable (dropped) messages."""

    forwarded: int = 0
    unroutable: int = 0
    batches: int = 0
    retries: int = 0
    partitions: Counter[int] = field(default_factory=Counter)


@functools.lru_cache(maxsize=64)
def _field_pattern(name: str) -> re.Pattern[bytes]:
    return re.compile(rb'"' + re.escape(name.encode()) + rb'"\s*:\s*("([^"\\]*)"|-?\d+)')


def _string_field(payload: bytes, name: str) -> str | None:
    """``payload[name]`` as text: a regex for the common flat case, JSON otherwise."""
    match = _field_pattern(name).search(payload)
    if match is not None:
        return (match.group(2) if match.group(2) is not None else match.group(1)).decode()
    if name.encode() not in payload:
        return None
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    found = value.get(name) if isinstance(value, dict) else None
    return None if found is None or isinstance(found, dict | list) else str(found)


def message_id(payload: bytes, id_field: str) -> str:
    """The payload's ``id_field``, or the first 24 hex chars of its SHA-256."""
    return _string_field(payload, id_field) or hashlib.sha256(payload).hexdigest()[:24]


def device_of(topic: str, payload: bytes, *, level: int | None, field: str) -> str | None:
    """The device of a message: topic level ``level``, else the payload's ``field``."""
    if level is not None:
        levels = topic.split("/")
        return levels[level] or None if level < len(levels) else None
    return _string_field(payload, field)


class Gateway:
    """Bridge ``config.mqtt`` topics into ``config.nats`` partitions (see the module doc).

    ``source`` / ``sink`` replace the transports built from the config (tests);
    ``flush_timeout`` is how long a batch may wait for JetStream before it is retried.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        source: Transport | None = None,
        sink: NatsTransport | None = None,
        flush_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.flush_timeout = flush_timeout
        if source is None:
            from loopline.stream.transports.mqtt import MqttTransport

            source = MqttTransport(config.mqtt)
        self.source = source
        self.sink = sink if sink is not None else NatsTransport(config.nats)
        self.stats = GatewayStats()
        self.batch_size = config.mqtt.receive_maximum
        self._held: list[Delivery] = []  # received, not yet confirmed by JetStream
        self._open = False

    def open(self) -> None:
        """Connect to JetStream (creating the stream), then subscribe on MQTT."""
        if not self._open:
            self.sink.open()
            try:
                self.source.open()
            except TransportError:
                self.sink.close()  # don't leave the JetStream connection behind
                raise
            self._open = True

    def close(self) -> None:
        """Disconnect both sides; MQTT messages not yet acked come back to the next gateway."""
        if self._open:
            self._open = False
            self.source.close()
            self.sink.close()

    def __enter__(self) -> Gateway:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forward(self, deliveries: Sequence[Delivery], *, timeout: float | None = None) -> int:
        """Publish ``deliveries`` to their partitions and wait for JetStream (no MQTT ack).

        Returns the number published; unroutable messages are counted and skipped. Raises
        :class:`~loopline.errors.TransportError` when JetStream did not confirm them all.
        """
        cfg, sink = self.config, self.sink
        partitions, prefix = cfg.nats.partitions, cfg.nats.subject_prefix
        counts: Counter[int] = Counter()
        unroutable = 0
        for d in deliveries:
            device = device_of(
                d.topic, d.payload, level=cfg.device_from_topic, field=cfg.device_field
            )
            if device is None:
                unroutable += 1
                logger.warning("gateway dropped a message without a device on %s", d.topic)
                continue
            partition = partition_of(device, partitions)
            counts[partition] += 1
            msg_id = f"{device}/{message_id(d.payload, cfg.id_field)}"
            sink.publish(f"{prefix}.{partition}", d.payload, msg_id=msg_id)
        sink.flush(self.flush_timeout if timeout is None else timeout)
        self.stats.partitions.update(counts)
        self.stats.unroutable += unroutable
        published = sum(counts.values())
        self.stats.forwarded += published
        return published

    def forward_once(self, timeout: float, *, max_messages: int | None = None) -> int:
        """Receive one MQTT batch (waiting at most ``timeout`` s), forward it, ack it.

        A batch JetStream did not confirm is kept and forwarded again by the next call
        before anything new is received. Returns the number of messages forwarded.
        """
        if not self._held:
            limit = self.batch_size if max_messages is None else min(self.batch_size, max_messages)
            self._held = self.source.receive(max(1, limit), timeout)
            if not self._held:
                return 0
        else:
            self.stats.retries += 1
        forwarded = self.forward(self._held)
        self.source.ack(self._held)
        self.stats.batches += 1
        self._held = []
        return forwarded

    def run(self, stop: threading.Event, *, max_messages: int | None = None) -> GatewayStats:
        """Forward until ``stop`` is set (or ``max_messages`` MQTT messages were handled).

        JetStream failures are logged and the batch retried every second; the gateway
        opens its transports if needed and closes the ones it opened.
        """
        opened_here = not self._open
        self.open()
        try:
            while not stop.is_set():
                handled = self.stats.forwarded + self.stats.unroutable
                if max_messages is not None and handled >= max_messages:
                    break
                remaining = None if max_messages is None else max_messages - handled
                try:
                    self.forward_once(0.5, max_messages=remaining)
                except TransportError as exc:
                    logger.warning(
                        "gateway could not forward %d messages: %s", len(self._held), exc
                    )
                    stop.wait(_RETRY_PAUSE)
        finally:
            if opened_here:
                self.close()
        return self.stats


def run_gateway(config: GatewayConfig, stop: threading.Event) -> GatewayStats:
    """``loopline stream gateway``: run a gateway built from ``config`` until ``stop``."""
    started = time.monotonic()
    stats = Gateway(config).run(stop)
    logger.info(
        "gateway forwarded %d messages (%d unroutable) in %.1fs",
        stats.forwarded, stats.unroutable, time.monotonic() - started,
    )  # fmt: skip
    return stats
