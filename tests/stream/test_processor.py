"""The stream processor end to end: simulated devices → transport → stored, windowed, scored rows.

Over the in-process MemoryTransport (pure pipeline logic) and over the real Mosquitto at QoS 1.
Every test checks exact counts: stored readings == unique valid messages published, rejects
quarantined with their reason, windows equal to a brute-force aggregation of the readings.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from tests.conftest import service_url
from tests.stream.stream_worker import assert_windows_exact

from loopline.config import LooplineConfig, config_from_dict
from loopline.config.streams import MemoryTransportConfig, MqttTransportConfig
from loopline.store.destination import QUARANTINE_TABLE
from loopline.stream.processor import StreamProcessor
from loopline.stream.simulator import SimulationReport, Simulator, SimulatorConfig
from loopline.stream.storage import StreamSink
from loopline.stream.transports.factory import create_transport
from loopline.stream.transports.memory import MemoryBroker, MemoryTransport

METRICS = ["temperature", "humidity", "vibration"]
WINDOW_S = 1.0


def _pipeline(transport: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "transport": transport,
        "metrics": METRICS,
        "windows": [
            {"kind": "tumbling", "size": WINDOW_S, "aggregates": ["count", "mean", "min", "max"]}
        ],
        "watermark": {"delay": 0.5, "allowed_lateness": 3600, "late_policy": "update"},
        "detectors": [{"kind": "zscore", "threshold": 5.0, "warmup": 20}],
        "sink": {"max_rows": 250, "max_delay": 0.2},
    }
    spec.update(extra)
    return spec


def _config(tmp_path: Path, name: str, pipeline: dict[str, Any], **top: Any) -> LooplineConfig:
    cfg = config_from_dict({"streams": {name: pipeline}, **top})
    return cfg.model_copy(update={"project_dir": tmp_path})


def _simulate(transport: Any, **overrides: Any) -> SimulationReport:
    settings: dict[str, Any] = {
        "devices": 8,
        "rate": 700.0,
        "duration": 3.0,
        "seed": 3,
        "realtime": False,
        "anomaly_rate": 0.01,
        "anomaly_kinds": ("spike",),
        "duplicate_fraction": 0.05,
        "malformed_fraction": 0.03,
        "out_of_order_fraction": 0.05,
        "late_fraction": 0.02,
        "late_by": 3.0,
    }
    settings.update(overrides)
    return Simulator(SimulatorConfig(**settings)).run(transport)


def _run(processor: StreamProcessor, idle_exit: float = 2.5) -> Any:
    return processor.run(threading.Event(), idle_exit=idle_exit)


def _tables(sink: StreamSink) -> dict[str, pl.DataFrame]:
    s = sink.settings
    return {
        "readings": sink.read_table(s.readings_table),
        "windows": sink.read_table(s.windows_table),
        "anomalies": sink.read_table(s.anomalies_table),
        "quarantine": sink.read_table(QUARANTINE_TABLE),
    }


def _memory_processor(
    tmp_path: Path, name: str, pipeline: dict[str, Any], **top: Any
) -> tuple[StreamProcessor, MemoryTransport, StreamSink]:
    config = _config(tmp_path, name, pipeline, **top)
    spec = config.streams[name]
    broker = MemoryBroker(capacity=50_000)
    transport = MemoryTransport(
        MemoryTransportConfig(name=name), broker=broker, topics=("sensors/#",)
    )
    transport.open()
    sink = StreamSink(name, spec, config=config)
    return (
        StreamProcessor(name, spec, config=config, transport=transport, sink=sink),
        transport,
        sink,
    )


def test_memory_stream_is_stored_exactly_with_windows_anomalies_and_rejects(tmp_path: Path) -> None:
    # Small batches, so the late readings (published 1.5 s after their event time, past the
    # 0.5 s watermark delay) meet an advanced watermark. (With late_by equal to the 3 s
    # duration no reading could be held back that long: late_updated then came only from
    # out-of-order readings, and was 0 in some runs, by where the start fell in a second.)
    pipeline = _pipeline({"kind": "memory"})
    processor, transport, sink = _memory_processor(tmp_path, "mem", pipeline)
    try:
        report = _simulate(transport, late_by=1.5)
        status = _run(processor)
        t = _tables(sink)
    finally:
        transport.close()
        sink.close()
    readings = t["readings"]
    assert readings.height == report.valid
    assert readings["msg_id"].n_unique() == report.valid
    assert status.duplicates == report.duplicates
    assert status.stored == report.valid
    assert report.late > 0
    assert status.late_updated > 0  # late readings re-opened their windows
    # Malformed payloads quarantined with the decoder's reasons.
    decode = t["quarantine"].filter(pl.col("_rule").str.starts_with("decode:"))
    assert decode.group_by("_rule").len().sort("_rule").rows() == sorted(
        report.expected_rejects().items()
    )
    assert set(t["quarantine"]["_source"]) == {"stream:mem"}
    assert_windows_exact(t["windows"], readings, WINDOW_S, METRICS)
    # Injected spikes are found (most of them) and every anomaly names a stored reading.
    spikes = set(report.truth["msg_id"])
    found = set(t["anomalies"]["msg_id"])
    assert found <= set(readings["msg_id"])
    assert len(found & spikes) >= 0.5 * len(spikes)
    assert status.alerts > 0


def test_contract_failures_and_transforms_and_enrichment(tmp_path: Path) -> None:
    pipeline = _pipeline(
        {"kind": "memory"},
        contract="sensors",
        transform=[
            {
                "step": "convert_units",
                "column": "temperature",
                "from": "degC",
                "to": "degF",
                "into": "temperature_f",
            }
        ],
        enrich_table="devices",
    )
    contracts = {"sensors": {"columns": {"humidity": {"type": "float64", "min": 0, "max": 60}}}}
    processor, transport, sink = _memory_processor(tmp_path, "rules", pipeline, contracts=contracts)
    registry = pa.table({"device": [f"d{i:04d}" for i in range(8)], "building": ["A", "B"] * 4})
    sink.destination.commit_batch(
        table="devices", data=registry, mode="append", key=[], quarantine=None,
        job="registry", batch_id="r1", state=None,
    )  # fmt: skip
    try:
        report = _simulate(
            transport, duplicate_fraction=0.0, malformed_fraction=0.0, late_fraction=0.0
        )
        status = _run(processor, idle_exit=1.5)
        t = _tables(sink)
    finally:
        transport.close()
        sink.close()
    readings, quarantine = t["readings"], t["quarantine"]
    failed = quarantine.filter(pl.col("_rule") == "range:humidity")
    assert failed.height > 0
    assert readings.height + failed.height == report.valid
    assert readings["humidity"].max() <= 60  # type: ignore[operator]
    assert status.invalid == failed.height
    expected_f = readings["temperature"] * 9 / 5 + 32
    assert (readings["temperature_f"] - expected_f).abs().max() < 1e-9  # type: ignore[operator]
    assert readings["building"].null_count() == 0
    assert set(readings["building"]) == {"A", "B"}


def test_late_policy_drop_counts_late_rows_and_still_stores_them(tmp_path: Path) -> None:
    pipeline = _pipeline(
        {"kind": "memory"}, watermark={"delay": 0.2, "allowed_lateness": 0, "late_policy": "drop"}
    )
    processor, transport, sink = _memory_processor(tmp_path, "late", pipeline)
    try:
        report = _simulate(transport, duplicate_fraction=0.0, malformed_fraction=0.0)
        status = _run(processor, idle_exit=1.5)
        readings = sink.read_table("readings")
    finally:
        transport.close()
        sink.close()
    assert status.late_dropped > 0
    assert status.late_updated == 0
    assert readings.height == report.valid


class _NoAck(MemoryTransport):
    def ack(self, deliveries: Any) -> None:
        """Drop acks on the floor: a crash between the commit and the ack."""


def test_redelivered_messages_after_a_restart_are_not_stored_twice(tmp_path: Path) -> None:
    """Unacked messages come back after a crash; remembered (seeded) ids drop them."""
    name = "redeliver"
    config = _config(tmp_path, name, _pipeline({"kind": "memory"}))
    spec = config.streams[name]
    broker = MemoryBroker(capacity=50_000)
    publisher = MemoryTransport(MemoryTransportConfig(name=name), broker=broker, topics=())
    publisher.open()
    report = _simulate(publisher, duplicate_fraction=0.0, malformed_fraction=0.0, late_fraction=0.0)
    # First life: commit everything but "crash" before acking (the sink holds the data).
    first = _NoAck(MemoryTransportConfig(name=name), broker=broker, topics=("sensors/#",))
    first.open()
    sink = StreamSink(name, spec, config=config)
    processor = StreamProcessor(name, spec, config=config, transport=first, sink=sink)
    processor.run(threading.Event(), max_messages=report.total)
    first.close()  # never acked: the broker hands them out again
    sink.close()
    # Second life: a fresh processor seeded from the store sees only redeliveries.
    second = MemoryTransport(MemoryTransportConfig(name=name), broker=broker, topics=("sensors/#",))
    second.open()
    sink = StreamSink(name, spec, config=config)
    again = StreamProcessor(name, spec, config=config, transport=second, sink=sink)
    try:
        status = _run(again, idle_exit=1.5)
        readings = sink.read_table("readings")
        windows = sink.read_table("window_aggregates")
    finally:
        second.close()
        sink.close()
    assert status.messages == report.total
    assert status.duplicates == report.total
    assert readings.height == report.valid
    assert_windows_exact(windows, readings, WINDOW_S, METRICS)


def test_status_and_prometheus_metrics_count_what_happened(tmp_path: Path) -> None:
    processor, transport, sink = _memory_processor(
        tmp_path, "metrics", _pipeline({"kind": "memory"})
    )
    seen: list[str] = []
    try:
        report = _simulate(transport, late_fraction=0.0)
        status = processor.run(
            threading.Event(), idle_exit=1.0, on_status=lambda s: seen.append(s.line())
        )
    finally:
        transport.close()
        sink.close()
    reg = processor.metrics.registry
    labels = {"pipeline": "metrics"}
    value = reg.get_sample_value
    assert value("loopline_stream_messages_total", {**labels, "outcome": "stored"}) == report.valid
    assert (
        value("loopline_stream_messages_total", {**labels, "outcome": "invalid"})
        == report.malformed
    )
    assert (
        value("loopline_stream_messages_total", {**labels, "outcome": "received"}) == report.total
    )
    assert value("loopline_stream_latency_seconds_count", labels) == report.valid
    assert value("loopline_stream_batch_commit_seconds_count", labels) >= status.batches
    assert status.invalid == report.malformed
    assert seen
    assert "msg/s" in seen[-1]


@pytest.mark.services
def test_mqtt_qos1_stream_is_stored_exactly(tmp_path: Path) -> None:
    url = service_url("mqtt")
    prefix = f"ll-test/{uuid.uuid4().hex[:10]}"
    name = "mqtt"
    pipeline = _pipeline(
        {"kind": "mqtt", "url": url, "topics": [f"{prefix}/#"], "qos": 1,
         "client_id": f"proc-{uuid.uuid4().hex[:8]}", "session_expiry": 0},
    )  # fmt: skip
    config = _config(tmp_path, name, pipeline)
    spec = config.streams[name]
    processor = StreamProcessor(name, spec, config=config)
    stop = threading.Event()
    started = threading.Event()
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(
            processor.run(stop, idle_exit=2.5, on_status=lambda _s: started.set())
        )
    )
    worker.start()
    publisher = create_transport(MqttTransportConfig(url=url, qos=1), subscribe=False)
    try:
        assert started.wait(10)
        publisher.open()
        report = _simulate(publisher, topic=prefix + "/{site}/{device}")
    finally:
        publisher.close()
        worker.join(30)
        stop.set()
    assert not worker.is_alive()
    status = result[0]
    sink = StreamSink(name, spec, config=config)
    try:
        t = _tables(sink)
    finally:
        sink.close()
    assert t["readings"].height == report.valid
    assert t["readings"]["msg_id"].n_unique() == report.valid
    assert status.duplicates >= report.duplicates
    assert t["quarantine"].height == report.malformed
    assert_windows_exact(t["windows"], t["readings"], WINDOW_S, METRICS)
    assert t["anomalies"].height > 0


def test_processor_builds_its_own_memory_transport(tmp_path: Path) -> None:
    name = f"own-{uuid.uuid4().hex[:6]}"
    config = _config(tmp_path, name, _pipeline({"kind": "memory", "name": name}))
    publisher = MemoryTransport(MemoryTransportConfig(name=name), topics=())
    publisher.open()
    processor = StreamProcessor(name, config.streams[name], config=config)
    stop = threading.Event()
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(processor.run(stop, idle_exit=5.0)))
    worker.start()
    try:
        time.sleep(0.3)
        report = _simulate(publisher, duplicate_fraction=0.0, malformed_fraction=0.0)
        deadline = time.monotonic() + 10
        while processor.status.stored < report.valid and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()  # SIGTERM path: flush, ack, return
        worker.join(10)
        publisher.close()
        MemoryBroker.forget_named(name)
    assert done[0].stored == report.valid


def test_metrics_are_served_over_http(tmp_path: Path) -> None:
    import httpx

    processor, transport, sink = _memory_processor(tmp_path, "http", _pipeline({"kind": "memory"}))
    try:
        report = _simulate(transport, duration=0.5, late_fraction=0.0)
        processor.run(threading.Event(), max_messages=report.total)
        port = processor.metrics.serve_metrics(0)
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        processor.metrics.close()
        transport.close()
        sink.close()
    line = f'loopline_stream_messages_total{{outcome="stored",pipeline="http"}} {report.valid}.0'
    assert line in body
    assert "loopline_stream_latency_seconds_bucket" in body


def test_lake_sink_with_registry_from_the_warehouse(tmp_path: Path) -> None:
    from loopline.store.warehouse import open_warehouse

    pipeline = _pipeline(
        {"kind": "memory"},
        enrich_table="devices",
        sink={"kind": "lake", "max_rows": 500, "max_delay": 0.2},
    )
    processor, transport, sink = _memory_processor(tmp_path, "lake", pipeline)
    warehouse = open_warehouse(processor.config.stores.warehouse_url, base_dir=tmp_path)
    registry = pa.table({"device": [f"d{i:04d}" for i in range(8)], "floor": list(range(8))})
    warehouse.commit_batch(
        table="devices", data=registry, mode="append", key=[], quarantine=None,
        job="registry", batch_id="r1", state=None,
    )  # fmt: skip
    warehouse.close()
    try:
        report = _simulate(transport, duration=1.0, late_fraction=0.0)
        _run(processor, idle_exit=1.5)
        t = _tables(sink)
        state = sink.read_state()
    finally:
        transport.close()
        sink.close()
    readings = t["readings"]
    assert readings.height == report.valid
    assert readings["floor"].null_count() == 0
    assert t["quarantine"].height == report.malformed
    assert_windows_exact(t["windows"], readings, WINDOW_S, METRICS)
    assert state is not None
    assert set(state["watermarks"]) == {"tumbling_1s"}
