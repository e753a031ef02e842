"""CommitWriter: batches committed on its thread in order, each acked only after its commit,
a one-batch hand-off (a slow sink blocks the next hand-over), a failed commit stops it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loopline.config import LooplineConfig
from loopline.config.stores import StoresConfig
from loopline.config.streams import MemoryTransportConfig, StreamPipelineConfig
from loopline.errors import SinkError
from loopline.store.postgres_warehouse import PostgresWarehouse
from loopline.stream.commit_writer import CommitWriter, PreparedBatch
from loopline.stream.status import StreamMetrics, StreamStatus
from loopline.stream.storage import StreamSink, empty_anomalies
from loopline.stream.transport import Delivery
from loopline.stream.transports.memory import MemoryBroker, MemoryTransport

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PIPELINE = StreamPipelineConfig.model_validate(
    {"transport": {"kind": "memory"}, "metrics": ["temperature"]}
)


class _LoggedSink(StreamSink):
    """A DuckDB sink that logs its commits; ``hold`` makes the commit of a batch wait."""

    def __init__(self, log: list[tuple[str, str]], folder: Path) -> None:
        super().__init__("w", PIPELINE, config=LooplineConfig(project_dir=folder))
        self.log = log
        self.fail: set[str] = set()
        self.hold: dict[str, threading.Event] = {}

    def commit(self, **parts: Any) -> None:
        batch_id = parts["batch_id"]
        if batch_id in self.hold:
            self.hold[batch_id].wait(10)
        if batch_id in self.fail:
            raise SinkError("disk full", table="readings")
        super().commit(**parts)
        self.log.append(("commit", batch_id))


class _LoggedTransport(MemoryTransport):
    def __init__(self, log: list[tuple[str, str]], broker: MemoryBroker) -> None:
        super().__init__(MemoryTransportConfig(), broker=broker, topics=["s/#"])
        self.log = log

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        super().ack(deliveries)
        self.log.extend(("ack", d.payload.decode()) for d in deliveries)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[list[tuple[str, str]], _LoggedSink, _LoggedTransport]]:
    log: list[tuple[str, str]] = []
    broker = MemoryBroker()
    transport = _LoggedTransport(log, broker)
    transport.open()
    for i in range(1, 4):
        transport.publish("s/d1", f"m{i}".encode())
    sink = _LoggedSink(log, tmp_path)
    yield log, sink, transport
    sink.close()


def _batch(transport: MemoryTransport, n: int) -> PreparedBatch:
    deliveries = transport.receive(1, timeout=1.0)
    assert [d.payload for d in deliveries] == [f"m{n}".encode()]
    readings = pl.DataFrame(
        {"msg_id": [f"m{n}"], "device": ["d1"], "ts": [T0 + timedelta(seconds=n)]},
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    return PreparedBatch(
        readings,
        pl.DataFrame(),
        pl.DataFrame(),
        empty_anomalies(),
        {},
        f"b{n}",
        deliveries=deliveries,
        counts={"invalid": 0},
    )


def _writer(sink: StreamSink, transport: MemoryTransport, status: StreamStatus) -> CommitWriter:
    return CommitWriter(
        sink, transport, pipeline=PIPELINE, status=status, metrics=StreamMetrics("w")
    )


def test_batches_are_committed_then_acked_in_order(parts: Any) -> None:
    log, sink, transport = parts
    status = StreamStatus(pipeline="w")
    writer = _writer(sink, transport, status)
    try:
        for n in (1, 2, 3):
            writer.submit(_batch(transport, n))
        writer.drain()
    finally:
        writer.close()
    assert log == [
        ("commit", "b1"),
        ("ack", "m1"),
        ("commit", "b2"),
        ("ack", "m2"),
        ("commit", "b3"),
        ("ack", "m3"),
    ]
    assert (status.messages, status.stored, status.batches) == (3, 3, 3)
    assert sink.read_table("readings")["msg_id"].to_list() == ["m1", "m2", "m3"]


def test_a_slow_commit_blocks_the_next_hand_over(parts: Any) -> None:
    log, sink, transport = parts
    sink.hold["b1"] = threading.Event()
    writer = _writer(sink, transport, StreamStatus(pipeline="w"))
    try:
        writer.submit(_batch(transport, 1))  # returns at once: the writer takes it
        second = _batch(transport, 2)
        handing = threading.Thread(target=writer.submit, args=(second,))
        handing.start()
        handing.join(0.3)
        assert handing.is_alive()  # b1 is still being committed: b2 waits for it
        assert log == []
        sink.hold["b1"].set()
        handing.join(10)
        assert not handing.is_alive()
        writer.drain()
    finally:
        writer.close()
    assert log == [("commit", "b1"), ("ack", "m1"), ("commit", "b2"), ("ack", "m2")]


def test_a_failed_commit_stops_the_writer_and_acks_nothing_after_it(parts: Any) -> None:
    log, sink, transport = parts
    sink.fail.add("b2")
    writer = _writer(sink, transport, StreamStatus(pipeline="w"))
    try:
        writer.submit(_batch(transport, 1))
        writer.submit(_batch(transport, 2))
        third = _batch(transport, 3)
        with pytest.raises(SinkError, match="disk full"):
            writer.submit(third)
        with pytest.raises(SinkError):
            writer.drain()
    finally:
        writer.close()
    assert log == [("commit", "b1"), ("ack", "m1")]
    assert sink.read_table("readings")["msg_id"].to_list() == ["m1"]


@pytest.mark.services
def test_a_lost_postgres_connection_is_reopened_and_the_batch_stored_once(
    tmp_path: Path, postgres_url: str
) -> None:
    broker = MemoryBroker()
    log: list[tuple[str, str]] = []
    transport = _LoggedTransport(log, broker)
    transport.open()
    for i in (1, 2):
        transport.publish("s/d1", f"m{i}".encode())
    config = LooplineConfig(stores=StoresConfig(warehouse_url=postgres_url), project_dir=tmp_path)
    sink = StreamSink("w", PIPELINE, config=config)
    status = StreamStatus(pipeline="w")
    writer = _writer(sink, transport, status)
    try:
        writer.submit(_batch(transport, 1))
        writer.drain()
        first = sink.destination
        pid = first.query("SELECT pg_backend_pid() AS pid").column("pid")[0].as_py()
        killer = PostgresWarehouse(postgres_url)
        try:
            killer.query("SELECT pg_terminate_backend($1)", [pid])
        finally:
            killer.close()
        writer.submit(_batch(transport, 2))  # the commit fails, then runs on a new connection
        writer.drain()
    finally:
        writer.close()
        sink.close()
    assert sink.destination is not first
    assert [entry for entry in log if entry[0] == "ack"] == [("ack", "m1"), ("ack", "m2")]
    reader = PostgresWarehouse(postgres_url)
    try:
        assert sorted(reader.read_table("readings")["msg_id"].to_pylist()) == ["m1", "m2"]
    finally:
        reader.close()
    assert status.stored == 2
