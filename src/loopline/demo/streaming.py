"""The demo's streaming stage: simulated devices through the ``sensors`` pipeline.

About 20 seconds of readings from 20 devices, with injected anomalies and delivery faults
(late, out-of-order, duplicate and malformed messages), go over MQTT to the broker named in
the workspace's loopline.yaml (Mosquitto on 127.0.0.1:1883 by default) and through
``loopline stream``'s processor into the warehouse. When no broker answers, the in-process
queue stands in, and the result says so. The result holds what was published, what the
processor counted, the newest window aggregates, and each detector's precision and recall
against the simulator's ground truth.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import polars as pl

from loopline.config import LooplineConfig, MemoryTransportConfig, MqttTransportConfig
from loopline.stream.ground_truth import DetectionScore, score_detections
from loopline.stream.processor import StreamProcessor
from loopline.stream.simulator import SimulationReport, Simulator, SimulatorConfig
from loopline.stream.status import StreamStatus
from loopline.stream.transports.factory import open_transport

PIPELINE = "sensors"
DEVICES = 20
RATE = 400.0
DRAIN_SECONDS = 15.0


@dataclass
class StreamDemoResult:
    transport: str
    published: SimulationReport
    status: StreamStatus
    windows: pl.DataFrame
    scores: list[DetectionScore]
    truth_path: Path


def run_stream_demo(config: LooplineConfig, *, seconds: float = 20.0) -> StreamDemoResult:
    """Publish ``seconds`` of simulated readings and run the pipeline until they are in."""
    spec = config.streams[PIPELINE]
    transport_config = spec.transport
    if isinstance(transport_config, MqttTransportConfig) and not _reachable(transport_config.url):
        spec = spec.model_copy(update={"transport": MemoryTransportConfig(name="loopline-demo")})
    where = (
        spec.transport.url
        if isinstance(spec.transport, MqttTransportConfig)
        else "the in-process queue (no MQTT broker answered)"
    )
    reader = open_transport(spec.transport)  # subscribed (or backlogged) before publishing
    processor = StreamProcessor(PIPELINE, spec, config=config, transport=reader)
    stop = threading.Event()
    statuses: list[StreamStatus] = []
    thread = threading.Thread(
        target=lambda: statuses.append(processor.run(stop)), name="stream-demo", daemon=True
    )
    thread.start()
    truth_path = config.resolve_path("reports/stream-truth.parquet")
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    simulator = Simulator(
        SimulatorConfig(
            devices=DEVICES,
            rate=RATE,
            duration=seconds,
            topic="loopline-demo/sensors/{site}/{device}",
            anomaly_rate=0.003,
            late_fraction=0.01,
            late_by=6.0,
            out_of_order_fraction=0.02,
            duplicate_fraction=0.01,
            malformed_fraction=0.005,
            seed=int(time.time()),
        )
    )
    publisher = open_transport(spec.transport, subscribe=False)
    try:
        report = simulator.run(publisher, truth_path=truth_path)
    finally:
        publisher.close()
    deadline = time.monotonic() + DRAIN_SECONDS
    while processor.status.messages < report.total and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(processor.idle_after + 1.0)  # the quiet stream closes its last windows
    stop.set()
    thread.join()
    reader.close()
    sink = processor.sink
    windows = sink.read_table(spec.sink.windows_table)
    anomalies = sink.read_table(spec.sink.anomalies_table)
    sink.close()
    return StreamDemoResult(
        transport=where,
        published=report,
        status=statuses[0] if statuses else processor.status,
        windows=_newest_windows(windows, spec.device_field),
        scores=score_detections(anomalies, report.truth),
        truth_path=truth_path,
    )


def _newest_windows(windows: pl.DataFrame, device: str) -> pl.DataFrame:
    """The newest 10-second temperature windows of the first three devices."""
    if windows.is_empty():
        return windows
    tumbling = windows.filter(
        pl.col("window").str.starts_with("tumbling") & (pl.col("metric") == "temperature")
    )
    devices = tumbling[device].unique().sort().head(3)
    return (
        tumbling.filter(pl.col(device).is_in(devices.implode()))
        .sort(device, "window_start")
        .group_by(device, maintain_order=True)
        .tail(2)
        .select(device, "window_start", "count", "mean", "min", "max", "p95")
    )


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 1883), 1):
            return True
    except OSError:
        return False
