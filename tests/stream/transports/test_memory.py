"""MemoryTransport and MemoryBroker: routing by topic filter, bounds, at-least-once redelivery."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from loopline.config.streams import MemoryTransportConfig
from loopline.errors import TransportError
from loopline.stream.transports.factory import open_transport
from loopline.stream.transports.memory import MemoryBroker, MemoryTransport, topic_matches


def make(broker: MemoryBroker, topics: tuple[str, ...] = ("#",), **kw: float) -> MemoryTransport:
    tx = MemoryTransport(MemoryTransportConfig(), broker=broker, topics=topics, **kw)
    tx.open()
    return tx


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sensors/+/+", "sensors/s1/d1", True),
        ("sensors/+/+", "sensors/s1", False),
        ("sensors/+/+", "sensors/s1/d1/x", False),
        ("sensors/#", "sensors", True),
        ("sensors/#", "sensors/s1/d1", True),
        ("sensors/#", "sensorsX/s1", False),
        ("+/s1/#", "sensors/s1/d1", True),
        ("#", "a/b", True),
        ("#", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("+", "", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_routes_by_filter_and_shares_a_subscription() -> None:
    broker = MemoryBroker(capacity=100)
    temps = make(broker, ("sensors/+/temp",))
    everything = make(broker, ("sensors/#",))
    writer = make(broker, ())
    assert temps.receive(10, 0) == []
    assert everything.receive(10, 0) == []
    writer.publish("sensors/d1/temp", b"t1")
    writer.publish("sensors/d1/hum", b"h1")
    writer.publish("other/d1/temp", b"o1")
    assert [d.payload for d in temps.receive(10, 0.1)] == [b"t1"]
    assert [(d.topic, d.payload) for d in everything.receive(10, 0.1)] == [
        ("sensors/d1/temp", b"t1"),
        ("sensors/d1/hum", b"h1"),
    ]
    # a second reader of the same filters splits the messages with the first
    peer = make(broker, ("sensors/#",))
    for i in range(6):
        writer.publish(f"sensors/d{i}/hum", str(i).encode())
    first = everything.receive(3, 0.1)
    second = peer.receive(10, 0.1)
    assert len(first) == 3
    assert len(second) == 3
    assert {d.payload for d in first + second} == {str(i).encode() for i in range(6)}
    assert writer.receive(10, 0.05) == []  # a transport with no topics reads nothing


def test_backlog_goes_to_the_first_matching_subscription() -> None:
    broker = MemoryBroker(capacity=100)
    writer = make(broker, ())
    for i in range(5):
        writer.publish(f"s/{i}", str(i).encode(), msg_id=f"id{i}")
    writer.publish("elsewhere", b"x")
    assert broker.depth() == 6
    reader = make(broker, ("s/#",))
    got = reader.receive(100, 0.1)
    assert [d.payload for d in got] == [str(i).encode() for i in range(5)]
    assert [d.msg_id for d in got] == [f"id{i}" for i in range(5)]
    assert broker.depth() == 1  # "elsewhere" still waits for a matching reader


def test_receive_waits_at_most_timeout_and_wakes_on_publish() -> None:
    broker = MemoryBroker(capacity=10)
    reader = make(broker)
    start = time.monotonic()
    assert reader.receive(5, 0.2) == []
    assert 0.15 < time.monotonic() - start < 1.0
    threading.Timer(0.1, lambda: broker.publish("a", b"late")).start()
    start = time.monotonic()
    assert [d.payload for d in reader.receive(5, 5.0)] == [b"late"]
    assert time.monotonic() - start < 2.0


def test_publish_blocks_while_full_and_resumes_after_ack() -> None:
    broker = MemoryBroker(capacity=3)
    reader = make(broker)
    writer = make(broker, (), publish_timeout=0.2)
    reader.receive(1, 0)
    for i in range(3):
        writer.publish("t", str(i).encode())
    with pytest.raises(TransportError, match="queue full: 3 messages"):
        writer.publish("t", b"x")
    held = reader.receive(10, 0.1)
    assert len(held) == 3
    assert reader.pending() == 0
    with pytest.raises(TransportError):  # handed out but not acked still counts
        writer.publish("t", b"x")
    done = threading.Event()

    def publish_later() -> None:
        MemoryTransport.publish(writer, "t", b"3")
        done.set()

    writer.publish_timeout = 5.0
    thread = threading.Thread(target=publish_later)
    thread.start()
    assert not done.wait(0.2)
    reader.ack(held[:1])
    assert done.wait(2.0)
    thread.join()
    assert [d.payload for d in reader.receive(10, 0.1)] == [b"3"]


def test_unacked_deliveries_come_back_in_order_after_close() -> None:
    broker = MemoryBroker(capacity=100)
    reader = make(broker)
    for i in range(6):
        broker.publish("t", str(i).encode())
    first = reader.receive(4, 0.1)
    reader.ack(first[1:2])
    reader.close()
    stale = first[0]
    reader.open()
    again = reader.receive(10, 0.1)
    assert [d.payload for d in again] == [b"0", b"2", b"3", b"4", b"5"]
    assert [d.redelivered for d in again] == [True, True, True, False, False]
    reader.ack([stale])  # an ack from before the reopening does not ack the new delivery
    reader.close()
    reader.open()
    assert [d.payload for d in reader.receive(10, 0.1)] == [b"0", b"2", b"3", b"4", b"5"]


def test_named_brokers_are_shared_by_name_and_forgettable() -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    writer = open_transport(MemoryTransportConfig(name=name, capacity=5), subscribe=False)
    reader = open_transport(MemoryTransportConfig(name=name))
    writer.publish("a/b", b"hello")
    assert [d.payload for d in reader.receive(5, 0.1)] == [b"hello"]
    assert isinstance(reader, MemoryTransport)
    assert reader.broker.capacity == 5
    assert MemoryBroker.named(name) is reader.broker
    MemoryBroker.forget_named(name)
    assert MemoryBroker.named(name) is not reader.broker
    MemoryBroker.forget_named(name)


def test_not_open_raises_and_bad_capacity_is_refused() -> None:
    tx = MemoryTransport(MemoryTransportConfig(), broker=MemoryBroker(1))
    with pytest.raises(TransportError, match="not open"):
        tx.publish("a", b"x")
    with pytest.raises(ValueError, match="'capacity' parameter must be >= 1"):
        MemoryBroker(0)
