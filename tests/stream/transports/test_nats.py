"""NatsTransport against the real JetStream server (and a private one for restarts)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from tests.conftest import service_url
from tests.stream.nats_server import PrivateNats

from loopline.config.streams import NatsTransportConfig
from loopline.errors import TransportError
from loopline.stream.transport import Delivery
from loopline.stream.transports.nats import NatsTransport, partition_of

pytestmark = pytest.mark.services

MakeConfig = Callable[..., NatsTransportConfig]


@pytest.fixture
def nats_config() -> Iterator[MakeConfig]:
    """Configs on a unique stream / prefix / durable; every stream made is deleted after."""
    made: list[NatsTransportConfig] = []
    url = service_url("nats")
    suffix = uuid.uuid4().hex[:10]

    def make(**overrides: Any) -> NatsTransportConfig:
        fields: dict[str, Any] = {
            "url": url, "stream": f"T_{suffix}", "subject_prefix": f"test.{suffix}",
            "durable": f"d{suffix}", "partitions": 4, "ack_wait": 5.0, "fetch_batch": 50,
        }  # fmt: skip
        config = NatsTransportConfig(**(fields | overrides))
        made.append(config)
        return config

    yield make
    for config in made:
        if config.url == url:
            with NatsTransport(config) as tx:
                tx.delete_stream()


def publish(tx: NatsTransport, n: int, *, devices: int = 10, start: int = 0) -> list[str]:
    """Publish ``n`` messages of ``devices`` devices to their partitions; their ids."""
    ids = []
    for i in range(start, start + n):
        device = f"dev{i % devices}"
        msg_id = f"{device}-{i:06d}"
        subject = tx.partition_subject(partition_of(device, tx.config.partitions))
        tx.publish(
            subject, f'{{"device": "{device}", "msg_id": "{msg_id}"}}'.encode(), msg_id=msg_id
        )
        ids.append(msg_id)
    tx.flush()
    return ids


def drain(tx: NatsTransport, *, expect: int, ack: bool = True, wait: float = 8.0) -> list[Delivery]:
    """Receive until ``expect`` deliveries came (or ``wait`` s passed), acking them."""
    out: list[Delivery] = []
    deadline = time.monotonic() + wait
    while len(out) < expect and time.monotonic() < deadline:
        batch = tx.receive(expect - len(out), 0.5)
        if ack:
            tx.ack(batch)
        out += batch
    return out


def test_partition_of_is_stable_and_in_range() -> None:
    assert partition_of("d0007", 8) == 5  # CRC-32, the same in every process
    assert {partition_of(f"d{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_open_fails_with_the_url_and_a_hint_when_no_server_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tx = NatsTransport(NatsTransportConfig(url=f"nats://u:secret@127.0.0.1:{port}"))
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}") as info:
        tx.open()
    assert info.value.hint
    assert "nats-server" in info.value.hint
    assert "secret" not in str(info.value)


def test_credentials_from_the_config_are_used_and_wrong_ones_refused() -> None:
    with PrivateNats(user="ann", password="s3cret") as server:
        good = NatsTransportConfig(url=server.url, user="ann", password="s3cret", partitions=1)
        with NatsTransport(good) as tx:
            tx.publish(tx.partition_subject(0), b"hello", msg_id="m1")
            tx.flush()
            assert [d.payload for d in drain(tx, expect=1)] == [b"hello"]
        bad = good.model_copy(update={"password": SecretStr("wrong")})
        with pytest.raises(TransportError, match="cannot connect"):
            NatsTransport(bad).open()


def test_receive_hands_out_each_message_once_and_a_reopened_durable_continues(
    nats_config: MakeConfig,
) -> None:
    config = nats_config()
    with NatsTransport(config) as tx:
        ids = publish(tx, 200)
        first = drain(tx, expect=120)
        assert len(first) == 120
        assert all(d.msg_id and d.payload and not d.redelivered for d in first)
        assert tx.pending() > 0  # prefetched beyond what was handed out: NAKed on close
    with NatsTransport(config) as tx:
        rest = drain(tx, expect=80)
        assert tx.receive(10, 0.3) == []
    got = [d.msg_id for d in first + rest]
    assert sorted(got) == sorted(ids)  # all of them, none twice


def test_unacked_messages_come_back_after_ack_wait_and_acked_ones_do_not(
    nats_config: MakeConfig,
) -> None:
    with NatsTransport(nats_config(ack_wait=1.0, partitions=1)) as tx:
        publish(tx, 10)
        batch = drain(tx, expect=10, ack=False)
        assert len(batch) == 10
        tx.ack(batch[:4])
        tx.ack(batch[:4])  # acking twice is harmless
        assert tx.receive(10, 0.3) == []  # not before ack_wait
        again = drain(tx, expect=6, wait=4.0)
        assert {d.msg_id for d in again} == {d.msg_id for d in batch[4:]}
        assert all(d.redelivered for d in again)
        assert tx.receive(10, 1.5) == []  # acked after redelivery: gone for good


def test_the_same_msg_id_is_stored_once_within_the_dedupe_window(nats_config: MakeConfig) -> None:
    with NatsTransport(nats_config(partitions=1)) as tx:
        subject = tx.partition_subject(0)
        for msg_id in ("a-1", "a-1", "a-2", "a-1"):
            tx.publish(subject, msg_id.encode(), msg_id=msg_id)
        tx.flush()
        got = drain(tx, expect=3, wait=1.5)
    assert sorted(d.payload for d in got) == [b"a-1", b"a-2"]


def test_publishing_outside_the_stream_fails_on_flush(nats_config: MakeConfig) -> None:
    with NatsTransport(nats_config()) as tx:
        tx.publish(f"nowhere.{uuid.uuid4().hex}", b"x", msg_id="x")
        with pytest.raises(TransportError, match="publishes failed"):
            tx.flush(timeout=5.0)
        tx.publish(tx.partition_subject(0), b"y", msg_id="y")
        tx.flush()  # the failure was reported once; the transport still works
    with pytest.raises(TransportError, match="not open"):
        tx.publish(tx.partition_subject(0), b"z")


def test_two_workers_split_the_partitions_and_keep_each_device_on_one(
    nats_config: MakeConfig,
) -> None:
    zero, one = nats_config(workers=2, worker=0), nats_config(workers=2, worker=1)
    with NatsTransport(zero) as w0, NatsTransport(one) as w1:
        assert w0.partitions == [0, 2]
        assert w1.partitions == [1, 3]
        ids = publish(w0, 400, devices=20)
        got: dict[int, list[Delivery]] = {0: [], 1: []}
        deadline = time.monotonic() + 8.0
        while len(got[0]) + len(got[1]) < 400 and time.monotonic() < deadline:
            for worker, tx in ((0, w0), (1, w1)):
                batch = tx.receive(100, 0.1)
                tx.ack(batch)
                got[worker] += batch
        assert w0.receive(10, 0.2) == []
        assert w1.receive(10, 0.2) == []
    assert sorted(d.msg_id for d in got[0] + got[1]) == sorted(ids)  # exactly once in total
    devices = [{d.msg_id.split("-")[0] for d in got[w] if d.msg_id} for w in (0, 1)]
    assert devices[0]
    assert devices[1]
    assert not devices[0] & devices[1]
    for worker in (0, 1):
        assert {int(d.topic.rsplit(".", 1)[1]) % 2 for d in got[worker]} == {worker}


def test_messages_survive_a_broker_restart_and_the_transport_reconnects() -> None:
    with PrivateNats() as server:
        config = NatsTransportConfig(url=server.url, partitions=2, fetch_batch=20, ack_wait=5.0)
        with NatsTransport(config) as tx:
            ids = publish(tx, 60)
            first = drain(tx, expect=20)
            server.restart()
            deadline = time.monotonic() + 8.0
            while True:  # publishes fail until the client has reconnected
                try:
                    ids += publish(tx, 20, start=60)
                    break
                except TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            rest = drain(tx, expect=60)
        assert len(first) == 20
        assert sorted({d.msg_id for d in first + rest}) == sorted(ids)
