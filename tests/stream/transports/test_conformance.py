"""One conformance suite every transport passes (the Transport Protocol's promises).

A transport joins by adding a harness factory to ``HARNESSES``: a context manager that
takes ``bound`` (the most unacked messages a reader may hold: MQTT ``receive_maximum``,
JetStream ``max_ack_pending``, the memory queue's ``capacity``) and yields a
:class:`Harness` whose ``open_reader`` returns a freshly opened reader with the same durable
identity every call (MQTT client id with a persistent session, JetStream durable, memory
subscription), ``open_writer`` an opened publisher and ``topics`` where to publish.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.conftest import service_url

from loopline.config.streams import MemoryTransportConfig, MqttTransportConfig, NatsTransportConfig
from loopline.stream.transport import Delivery, Transport
from loopline.stream.transports.factory import open_transport
from loopline.stream.transports.memory import MemoryBroker, MemoryTransport
from loopline.stream.transports.nats import NatsTransport


@dataclass
class Harness:
    open_reader: Callable[[], Transport]
    open_writer: Callable[[], Transport]
    topics: list[str]
    bound: int
    opened: list[Transport] = field(default_factory=list)

    def reader(self) -> Transport:
        tx = self.open_reader()
        self.opened.append(tx)
        return tx

    def writer(self) -> Transport:
        tx = self.open_writer()
        self.opened.append(tx)
        return tx


@contextlib.contextmanager
def memory_harness(bound: int) -> Iterator[Harness]:
    broker = MemoryBroker(capacity=bound)
    config = MemoryTransportConfig(name=f"conformance-{uuid.uuid4().hex[:8]}", capacity=bound)

    def reader() -> Transport:
        tx = MemoryTransport(config, broker=broker, topics=("conf/#",))
        tx.open()
        return tx

    def writer() -> Transport:
        tx = MemoryTransport(config, broker=broker, topics=(), publish_timeout=10.0)
        tx.open()
        return tx

    yield Harness(reader, writer, [f"conf/d{i}" for i in range(4)], bound)


@contextlib.contextmanager
def mqtt_harness(bound: int) -> Iterator[Harness]:
    url, base = service_url("mqtt"), f"loopline-conf/{uuid.uuid4().hex}"
    reading = MqttTransportConfig(
        url=url,
        topics=[f"{base}/#"],
        client_id=f"conf-{uuid.uuid4().hex[:12]}",
        session_expiry=10,  # the session on the shared broker expires soon after the test
        receive_maximum=bound,
    )
    yield Harness(
        lambda: open_transport(reading),
        lambda: open_transport(reading, subscribe=False),
        [f"{base}/d{i}" for i in range(4)],
        bound,
    )


@contextlib.contextmanager
def nats_harness(bound: int) -> Iterator[Harness]:
    suffix = uuid.uuid4().hex[:10]
    config = NatsTransportConfig(
        url=service_url("nats"),
        stream=f"CONF_{suffix}",
        subject_prefix=f"conf.{suffix}",
        durable=f"conf{suffix}",
        partitions=4,
        max_ack_pending=bound,
    )
    yield Harness(
        lambda: open_transport(config),
        lambda: open_transport(config, subscribe=False),
        [f"conf.{suffix}.{p}" for p in range(4)],
        bound,
    )
    with NatsTransport(config) as tx:
        tx.delete_stream()


# Each transport adds its harness here.
HARNESSES: list[Any] = [
    memory_harness,
    pytest.param(mqtt_harness, marks=pytest.mark.services),
    pytest.param(nats_harness, marks=pytest.mark.services),
]


@pytest.fixture(params=HARNESSES, ids=lambda h: h.__name__.removesuffix("_harness"))
def make_harness(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[int], Harness]]:
    stack = contextlib.ExitStack()
    made: list[Harness] = []

    def make(bound: int) -> Harness:
        harness = stack.enter_context(request.param(bound))
        made.append(harness)
        return harness

    with stack:
        yield make
        for harness in made:
            for tx in harness.opened:
                tx.close()


def publish(writer: Transport, topics: list[str], n: int, start: int = 0) -> list[bytes]:
    sent = [f'{{"i": {i}, "pad": "{"x" * (i % 7)}"}}'.encode() for i in range(start, start + n)]
    for i, payload in enumerate(sent):
        writer.publish(topics[i % len(topics)], payload, msg_id=f"m{start + i}")
    writer.flush(10.0)
    return sent


def collect(
    reader: Transport, n: int, *, ack: bool = True, timeout: float = 5.0, batch: int = 64
) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        part = reader.receive(min(batch, n - len(got)), 0.1)
        if ack:
            reader.ack(part)
        got += part
    return got


def test_publish_n_receive_exactly_n(make_harness: Callable[[int], Harness]) -> None:
    h = make_harness(1000)
    reader = h.reader()
    sent = publish(h.writer(), h.topics, 300)
    got = collect(reader, 300)
    assert sorted(d.payload for d in got) == sorted(sent)
    assert {d.topic for d in got} <= set(h.topics)
    assert all(isinstance(d.received_ns, int) and d.received_ns > 0 for d in got)
    assert reader.receive(10, 0.2) == []


def test_unacked_deliveries_come_back_after_reopen(make_harness: Callable[[int], Harness]) -> None:
    h = make_harness(1000)
    reader = h.reader()
    sent = publish(h.writer(), h.topics, 60)
    first = collect(reader, 20, ack=False)
    assert len(first) == 20
    reader.ack(first[:5])
    reader.close()
    again = h.reader()
    got = collect(again, 55)
    acked = {d.payload for d in first[:5]}
    assert sorted(d.payload for d in got) == sorted(p for p in sent if p not in acked)
    assert {d.payload for d in first[5:]} <= {d.payload for d in got}
    assert again.receive(10, 0.3) == []


def test_pending_and_unacked_stay_bounded(make_harness: Callable[[int], Harness]) -> None:
    bound = 10
    h = make_harness(bound)
    reader = h.reader()
    writer = h.writer()
    sent: list[bytes] = []
    # the memory queue blocks its publisher at the bound: publish from a thread
    thread = threading.Thread(target=lambda: sent.extend(publish(writer, h.topics, 3 * bound)))
    thread.start()
    held: list[Delivery] = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        held += reader.receive(100, 0.05)
        assert len(held) <= bound
        assert reader.pending() <= bound
    assert len(held) == bound
    reader.ack(held)
    rest = collect(reader, 2 * bound)
    thread.join(10)
    assert sorted(d.payload for d in held + rest) == sorted(sent)


def test_ack_is_idempotent_and_sticks(make_harness: Callable[[int], Harness]) -> None:
    h = make_harness(1000)
    reader = h.reader()
    publish(h.writer(), h.topics, 30)
    got = collect(reader, 30, ack=False)
    assert len(got) == 30
    reader.ack(got)
    reader.ack(got[::2])
    reader.ack([])
    reader.close()
    assert h.reader().receive(10, 0.3) == []


def test_close_is_idempotent(make_harness: Callable[[int], Harness]) -> None:
    h = make_harness(100)
    reader = h.reader()
    writer = h.writer()
    reader.close()
    reader.close()
    writer.close()
    writer.close()
