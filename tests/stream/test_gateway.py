"""The MQTT → JetStream gateway against the real Mosquitto and NATS servers."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.conftest import service_url
from tests.stream.nats_server import PrivateNats

from loopline.config.streams import GatewayConfig, MqttTransportConfig, NatsTransportConfig
from loopline.errors import TransportError
from loopline.stream.gateway import Gateway, device_of, message_id
from loopline.stream.transport import Delivery
from loopline.stream.transports.mqtt import MqttTransport
from loopline.stream.transports.nats import NatsTransport, partition_of

pytestmark = pytest.mark.services


@pytest.fixture
def config() -> Iterator[GatewayConfig]:
    """A gateway on a unique topic root, stream and client id; the stream is deleted after."""
    u = uuid.uuid4().hex[:10]
    mqtt = MqttTransportConfig(
        url=service_url("mqtt"), topics=[f"gw-{u}/+/+"], client_id=f"gw-{u}", session_expiry=60
    )
    nats = NatsTransportConfig(
        url=service_url("nats"), stream=f"GW_{u}", subject_prefix=f"gw.{u}", partitions=4,
        durable=f"c{u}", fetch_batch=100,
    )  # fmt: skip
    config = GatewayConfig(mqtt=mqtt, nats=nats)
    yield config
    with NatsTransport(nats) as tx:
        tx.delete_stream()
    # a clean start with the same client id ends the persistent MQTT session
    ender = MqttTransport(mqtt.model_copy(update={"session_expiry": 0, "topics": []}))
    ender.open()
    ender.close()


def send_readings(config: GatewayConfig, n: int, *, devices: int = 12) -> set[str]:
    """Devices publish ``n`` QoS 1 readings to ``<root>/<site>/<device>``; their msg ids."""
    root = config.mqtt.topics[0].split("/")[0]
    ids = set()
    devices_tx = MqttTransport(MqttTransportConfig(url=config.mqtt.url))
    devices_tx.open()
    try:
        for i in range(n):
            device = f"d{i % devices:03d}"
            msg_id = f"{device}-{i:05d}"
            body = {"msg_id": msg_id, "device": device, "ts": time.time(), "temperature": 20.5}
            devices_tx.publish(f"{root}/s{i % 2}/{device}", json.dumps(body).encode())
            ids.add(msg_id)
        devices_tx.flush()
    finally:
        devices_tx.close()
    return ids


def consume(config: NatsTransportConfig, expect: int, *, wait: float = 8.0) -> list[Delivery]:
    """Everything a JetStream consumer receives (and acks) until ``expect`` came or a quiet
    0.5 s after that, so duplicates would show."""
    got: list[Delivery] = []
    deadline = time.monotonic() + wait
    with NatsTransport(config) as tx:
        while time.monotonic() < deadline:
            batch = tx.receive(500, 0.5)
            tx.ack(batch)
            got += batch
            if not batch and len(got) >= expect:
                break
    return got


def test_device_and_message_id_extraction() -> None:
    payload = b'{"device": "d9", "n": 1, "msg_id": 42}'
    assert device_of("a/b/c", payload, level=2, field="device") == "c"
    assert device_of("a/b", payload, level=2, field="device") is None
    assert device_of("a/b", payload, level=None, field="device") == "d9"
    assert device_of("a/b", b'{"device": "with \\"quote\\""}', level=None, field="device") == (
        'with "quote"'
    )
    assert device_of("a/b", b"not json", level=None, field="device") is None
    assert message_id(payload, "msg_id") == "42"
    assert message_id(b'{"x": 1}', "msg_id") == message_id(b'{"x": 1}', "msg_id")
    assert len(message_id(b'{"x": 1}', "msg_id")) == 24


def test_gateway_forwards_every_reading_once_with_each_device_on_its_partition(
    config: GatewayConfig,
) -> None:
    gateway = Gateway(config)
    stop = threading.Event()
    gateway.open()  # subscribed before the devices publish
    runner = threading.Thread(target=gateway.run, args=(stop,), kwargs={"max_messages": 300})
    runner.start()
    try:
        ids = send_readings(config, 300)
        runner.join(timeout=15)
    finally:
        stop.set()
        runner.join()
        gateway.close()
    stats = gateway.stats
    assert stats.forwarded == 300
    assert stats.unroutable == 0
    assert sum(stats.partitions.values()) == 300
    got = consume(config.nats, 300)
    assert sorted(d.msg_id or "" for d in got) == sorted(f"{i.split('-')[0]}/{i}" for i in ids)
    prefix = config.nats.subject_prefix
    for d in got:
        device = json.loads(d.payload)["device"]
        assert d.topic == f"{prefix}.{partition_of(device, config.nats.partitions)}"
    assert len({d.topic for d in got}) > 1


def test_a_gateway_killed_before_acking_is_replaced_without_duplicates(
    config: GatewayConfig,
) -> None:
    first = Gateway(config)
    first.open()
    ids = send_readings(config, 120)
    held: list[Delivery] = []
    deadline = time.monotonic() + 8.0
    while len(held) < 120 and time.monotonic() < deadline:
        held += first.source.receive(120 - len(held), 0.5)
    assert first.forward(held) == 120  # in JetStream, but the MQTT acks never go out
    first.close()

    second = Gateway(config)
    stop = threading.Event()
    stats = second.run(stop, max_messages=120)  # the broker redelivers the unacked batch
    assert stats.forwarded == 120
    got = consume(config.nats, 120)
    assert len(got) == 120
    assert {json.loads(d.payload)["msg_id"] for d in got} == ids


def test_a_batch_jetstream_did_not_confirm_is_kept_and_forwarded_again(
    config: GatewayConfig,
) -> None:
    with PrivateNats() as server:
        nats = config.nats.model_copy(update={"url": server.url})
        config = config.model_copy(update={"nats": nats})
        gateway = Gateway(config, flush_timeout=1.0)
        gateway.open()
        try:
            server.stop()
            ids = send_readings(config, 40)
            failed, deadline = False, time.monotonic() + 8.0
            while not failed and time.monotonic() < deadline:
                try:
                    gateway.forward_once(0.5)
                except TransportError:  # JetStream is down: the batch is kept, not acked
                    failed = True
            assert failed
            assert gateway.stats.forwarded == 0
            server.start()
            deadline = time.monotonic() + 10.0
            while gateway.stats.forwarded < 40 and time.monotonic() < deadline:
                with contextlib.suppress(TransportError):  # until the client reconnected
                    gateway.forward_once(0.5)
        finally:
            gateway.close()
        assert gateway.stats.retries >= 1
        got = consume(nats, 40)
    assert sorted(json.loads(d.payload)["msg_id"] for d in got) == sorted(ids)


def test_messages_without_a_device_are_counted_as_unroutable_and_dropped(
    config: GatewayConfig,
) -> None:
    config = config.model_copy(update={"device_from_topic": None})
    deliveries = [
        Delivery(b'{"device": "d1", "msg_id": "m1"}', "x/y", 0),
        Delivery(b'{"msg_id": "m2"}', "x/y", 0),
        Delivery(b"\xff not json", "x/y", 0),
    ]
    with NatsTransport(config.nats) as sink:
        gateway = Gateway(config, sink=sink)
        assert gateway.forward(deliveries) == 1
    assert gateway.stats.unroutable == 2
    assert [d.msg_id for d in consume(config.nats, 1, wait=3.0)] == ["d1/m1"]
