"""MqttTransport against the real Mosquitto (and private ones for auth, TLS and restarts)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from tests.conftest import service_url
from tests.stream.mosquitto_server import PrivateMosquitto
from tests.stream.private_server import free_port

from loopline.config.streams import MqttTransportConfig, TlsOptions
from loopline.errors import ConfigError, TransportError
from loopline.stream.transport import Delivery
from loopline.stream.transports.factory import open_transport
from loopline.stream.transports.mqtt import MqttTransport


def config(url: str, **fields: Any) -> MqttTransportConfig:
    """Short sessions (they expire on the shared broker) and a unique client id if reading."""
    if fields.get("topics") and "client_id" not in fields:
        fields["client_id"] = f"t-{uuid.uuid4().hex[:12]}"
    return MqttTransportConfig(url=url, session_expiry=10, keepalive=5, **fields)


def topic() -> str:
    return f"loopline-test/{uuid.uuid4().hex}"


@pytest.fixture
def private_broker() -> Iterator[Callable[..., PrivateMosquitto]]:
    """Start private brokers; list this fixture before ``opened`` so they stop last."""
    brokers: list[PrivateMosquitto] = []

    def make(**kwargs: Any) -> PrivateMosquitto:
        broker = PrivateMosquitto(**kwargs)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def opened() -> Iterator[list[MqttTransport]]:
    """Transports a test opens with :func:`start`; all closed afterwards.

    MQTT 3.1.1 sessions never expire on the shared broker: they are wiped with a clean
    connect (MQTT 5 sessions of these tests expire after ``session_expiry``).
    """
    transports: list[MqttTransport] = []
    yield transports
    for tx in transports:
        tx.close()
    for tx in transports:
        if tx.persistent and tx.config.protocol == "3.1.1" and tx.port == 1883:
            wipe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=tx.client_id)
            with contextlib.suppress(OSError):
                wipe.connect(tx.host, tx.port)
                wipe.loop_start()
                wipe.disconnect()
                wipe.loop_stop()


def start(opened: list[MqttTransport], cfg: MqttTransportConfig, **kw: Any) -> MqttTransport:
    tx = MqttTransport(cfg, **kw)
    tx.open()
    opened.append(tx)
    return tx


def drain(tx: MqttTransport, n: int, *, timeout: float = 5.0, ack: bool = True) -> list[Delivery]:
    """Receive until ``n`` deliveries arrived or ``timeout`` passed, acking each batch."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        batch = tx.receive(n - len(got), 0.1)
        if ack:
            tx.ack(batch)
        got += batch
    return got


def payloads(deliveries: list[Delivery]) -> list[bytes]:
    return [d.payload for d in deliveries]


def send(tx: MqttTransport, base: str, n: int, start: int = 0) -> list[bytes]:
    sent = [f"m{i:05d}".encode() for i in range(start, start + n)]
    for p in sent:
        tx.publish(f"{base}/d{int(p[1:]) % 3}", p)
    tx.flush(5.0)
    return sent


def test_url_parsing_redaction_and_config_errors() -> None:
    tx = MqttTransport(MqttTransportConfig(url="mqtt://broker.example"))
    assert (tx.host, tx.port, tx.uses_tls) == ("broker.example", 1883, False)
    tls = MqttTransport(MqttTransportConfig(url="mqtts://broker.example"))
    assert (tls.port, tls.uses_tls) == (8883, True)
    with pytest.raises(ConfigError, match="needs a fixed client_id") as err:
        MqttTransport(MqttTransportConfig(topics=["a/#"]))
    assert err.value.fields["path"] == "transport.client_id"
    MqttTransport(MqttTransportConfig(topics=["a/#"], session_expiry=0))  # no session: fine
    MqttTransport(MqttTransportConfig(topics=["a/#"], qos=0))
    with pytest.raises(ConfigError, match="unsupported MQTT URL scheme 'ws'"):
        MqttTransport(MqttTransportConfig(url="ws://u:secret@h:80"))


def test_unreachable_broker_raises_with_redacted_url() -> None:
    url = f"mqtt://ann:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(TransportError, match="cannot connect to MQTT broker") as err:
        MqttTransport(config(url), connect_timeout=2).open()
    assert "hunter2" not in str(err.value)
    assert "ann:***@127.0.0.1" in str(err.value)
    assert err.value.hint


@pytest.mark.services
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_delivers_every_message_at_qos(
    opened: list[MqttTransport], qos: int, protocol: str
) -> None:
    url, base = service_url("mqtt"), topic()
    reader = start(opened, config(url, topics=[f"{base}/+"], qos=qos, protocol=protocol))
    writer = start(opened, config(url, qos=qos, protocol=protocol))
    sent = send(writer, base, 300)
    got = drain(reader, 300)
    assert sorted(payloads(got)) == sent
    assert {d.topic for d in got} == {f"{base}/d{i}" for i in range(3)}
    assert all(d.token[2] == qos for d in got)
    assert reader.receive(10, 0.1) == []


@pytest.mark.services
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_persistent_session_keeps_unacked_and_missed_messages(
    opened: list[MqttTransport], protocol: str
) -> None:
    url, base = service_url("mqtt"), topic()
    cfg = config(url, topics=[f"{base}/#"], protocol=protocol)
    writer = start(opened, config(url))
    reader = start(opened, cfg)
    sent = send(writer, base, 40)
    first = drain(reader, 20, ack=False)  # 3.1.1: the broker's in-flight limit is 20
    reader.ack(first[:10])
    reader.close()  # 30 not acked: 10 handed out, 20 in the inbox or still on the broker
    sent += send(writer, base, 60, start=40)  # published while the reader is away
    back = start(opened, cfg)
    again = drain(back, 90)
    assert sorted(payloads(again)) == sent[10:]
    assert back.receive(10, 0.2) == []


@pytest.mark.services
def test_shared_subscription_splits_the_messages(opened: list[MqttTransport]) -> None:
    url, base = service_url("mqtt"), topic()
    group = f"g{uuid.uuid4().hex[:8]}"
    one = start(opened, config(url, topics=[f"{base}/#"], shared_group=group))
    two = start(opened, config(url, topics=[f"{base}/#"], shared_group=group))
    writer = start(opened, config(url))
    sent = send(writer, base, 200)
    got_one: list[Delivery] = []
    got_two: list[Delivery] = []
    deadline = time.monotonic() + 5
    while len(got_one) + len(got_two) < 200 and time.monotonic() < deadline:
        for tx, got in ((one, got_one), (two, got_two)):
            batch = tx.receive(200, 0.05)
            tx.ack(batch)
            got += batch
    assert got_one
    assert got_two
    assert sorted(payloads(got_one) + payloads(got_two)) == sent


@pytest.mark.services
def test_username_and_password(
    private_broker: Callable[..., PrivateMosquitto], opened: list[MqttTransport]
) -> None:
    broker = private_broker(users={"ann": "s3cret-pw"})
    ok = config(broker.url, username="ann", password=SecretStr("s3cret-pw"))
    writer = start(opened, ok)
    reader = start(opened, ok.model_copy(update={"topics": ["a/#"], "client_id": "ann-r"}))
    writer.publish("a/b", b"hi")
    assert payloads(drain(reader, 1)) == [b"hi"]
    bad = config(broker.url, username="ann", password=SecretStr("wrong-pw"))
    with pytest.raises(TransportError, match="refused the connection") as err:
        MqttTransport(bad, connect_timeout=5).open()
    assert "wrong-pw" not in str(err.value)
    assert "username" in (err.value.hint or "")
    with pytest.raises(TransportError, match="refused"):
        MqttTransport(config(broker.url), connect_timeout=5).open()  # anonymous


@pytest.mark.services
def test_tls_with_a_private_ca(
    private_broker: Callable[..., PrivateMosquitto], opened: list[MqttTransport]
) -> None:
    broker = private_broker(tls=True)
    tls = TlsOptions(ca_file=broker.ca_file)
    reader = start(opened, config(broker.tls_url, topics=["secure/#"], tls=tls))
    writer = start(opened, config(broker.tls_url, tls=tls))
    assert reader.uses_tls
    writer.publish("secure/x", b"over tls")
    assert payloads(drain(reader, 1)) == [b"over tls"]
    with pytest.raises(TransportError, match="certificate verify failed"):
        MqttTransport(config(broker.tls_url), connect_timeout=5).open()  # system CAs


@pytest.mark.services
def test_unacked_intake_never_exceeds_receive_maximum(opened: list[MqttTransport]) -> None:
    url, base = service_url("mqtt"), topic()
    reader = start(opened, config(url, topics=[f"{base}/#"], receive_maximum=5))
    writer = start(opened, config(url))
    sent = send(writer, base, 40)
    held: list[Delivery] = []
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline:
        held += reader.receive(100, 0.05)
        assert len(held) <= 5
        assert reader.pending() <= 5
    assert len(held) == 5
    got = list(held)
    reader.ack(held)
    got += drain(reader, 35)
    assert sorted(payloads(got)) == sent


@pytest.mark.services
def test_publish_window_and_flush_time_out_while_the_broker_is_down(
    private_broker: Callable[..., PrivateMosquitto], opened: list[MqttTransport]
) -> None:
    broker = private_broker()
    writer = start(opened, config(broker.url), publish_window=3, publish_timeout=0.3)
    broker.stop()
    deadline = time.monotonic() + 5
    while writer.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in range(3):
        writer.publish("w/x", str(i).encode())  # queued by paho, sent on reconnect
    with pytest.raises(TransportError, match="3 QoS 1 publishes unconfirmed"):
        writer.publish("w/x", b"3")
    with pytest.raises(TransportError, match="3 MQTT publishes unconfirmed"):
        writer.flush(0.2)
    broker.start()
    writer.flush(10.0)  # reconnected: the queued publishes are confirmed
    writer.publish("w/x", b"4")
    writer.flush(5.0)


@pytest.mark.services
def test_broker_restart_loses_nothing(
    private_broker: Callable[..., PrivateMosquitto], opened: list[MqttTransport]
) -> None:
    broker = private_broker()
    reader = start(opened, config(broker.url, topics=["plant/#"], receive_maximum=20))
    writer = start(opened, config(broker.url))
    sent = send(writer, "plant", 100)
    seen = set(payloads(drain(reader, 50)))
    unacked = reader.receive(10, 1.0)  # handed out, never acked: redelivered later
    assert unacked
    broker.restart()
    stop = threading.Event()
    more: list[bytes] = []

    def publish_while_reconnecting() -> None:
        more.extend(send(writer, "plant", 100, start=100))
        stop.set()

    thread = threading.Thread(target=publish_while_reconnecting)
    thread.start()
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline and not (stop.is_set() and seen == set(sent + more)):
        batch = reader.receive(100, 0.1)
        reader.ack(batch)
        seen.update(payloads(batch))
    thread.join(10)
    assert stop.is_set()
    assert seen == set(sent + more)
    assert {d.payload for d in unacked} <= seen
    assert reader.connected


@pytest.mark.services
def test_factory_publisher_does_not_take_over_the_reader_session(
    opened: list[MqttTransport],
) -> None:
    url, base = service_url("mqtt"), topic()
    reading = config(url, topics=[f"{base}/#"])
    reader = open_transport(reading)
    writer = open_transport(reading, subscribe=False)
    assert isinstance(reader, MqttTransport)
    assert isinstance(writer, MqttTransport)
    opened += [reader, writer]
    assert writer.client_id == f"{reading.client_id}-pub"
    assert writer.config.topics == []
    writer.publish(f"{base}/x", b"one")
    assert payloads(drain(reader, 1)) == [b"one"]


def test_publish_before_open_raises() -> None:
    with pytest.raises(TransportError, match="not open"):
        MqttTransport(MqttTransportConfig()).publish("a", b"x")
    assert MqttTransport(MqttTransportConfig()).receive(10, 0) == []
