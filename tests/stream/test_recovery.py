"""Crash and broker-restart recovery, and backpressure, over a private Mosquitto at QoS 1.

The processor runs as its own process (``tests/stream/stream_worker.py``) so it can be
killed with SIGKILL mid-stream. Whatever happens, the stored readings must equal the unique
valid messages published, each exactly once, and the windows must equal a brute-force
aggregation of the stored readings.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tests.stream.mosquitto_server import PrivateMosquitto
from tests.stream.stream_worker import assert_windows_exact, write_project
from tests.stream.worker_process import WorkerProcess

from loopline.config import load_config
from loopline.config.streams import MqttTransportConfig
from loopline.stream.processor import StreamProcessor
from loopline.stream.simulator import SimulationReport, Simulator, SimulatorConfig
from loopline.stream.storage import StreamSink
from loopline.stream.transports.factory import create_transport

pytestmark = pytest.mark.services
METRICS = ["temperature", "humidity", "vibration"]
NAME = "recovery"
RM_KILL = 1000  # below the backlog: the restarted worker resumes a full unacked window


@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto() as server:
        yield server


def _pipeline(url: str, prefix: str, **sink: Any) -> dict[str, Any]:
    return {
        "transport": {
            "kind": "mqtt",
            "url": url,
            "topics": [f"{prefix}/#"],
            "qos": 1,
            "client_id": f"proc-{uuid.uuid4().hex[:8]}",
            "session_expiry": 3600,
            "receive_maximum": sink.pop("receive_maximum", 1000),
        },
        "metrics": METRICS,
        "windows": [{"kind": "tumbling", "size": 1, "aggregates": ["count", "mean", "min", "max"]}],
        "watermark": {"delay": 0.5, "allowed_lateness": 3600, "late_policy": "update"},
        "detectors": [{"kind": "zscore", "threshold": 5.0}],
        "sink": {"max_rows": 500, "max_delay": 0.2, **sink},
    }


class _Publisher(threading.Thread):
    """Publishes a realtime simulated stream in the background."""

    def __init__(self, url: str, prefix: str, **settings: Any) -> None:
        super().__init__(daemon=True)
        self.transport = create_transport(MqttTransportConfig(url=url, qos=1), subscribe=False)
        config = {"devices": 10, "rate": 1000.0, "duration": 3.0, "seed": 5, **settings}
        self.simulator = Simulator(SimulatorConfig(topic=prefix + "/{site}/{device}", **config))
        self.report: SimulationReport | None = None

    def run(self) -> None:
        self.transport.open()
        try:
            self.report = self.simulator.run(self.transport)
        finally:
            self.transport.close()


def _stored(project: Path) -> dict[str, pl.DataFrame]:
    config = load_config(project)
    sink = StreamSink(NAME, config.streams[NAME], config=config)
    try:
        return {
            "readings": sink.read_table("readings"),
            "windows": sink.read_table("window_aggregates"),
        }
    finally:
        sink.close()


def _assert_exact(project: Path, report: SimulationReport | None) -> None:
    assert report is not None
    t = _stored(project)
    readings = t["readings"]
    assert readings.height == report.valid
    assert readings["msg_id"].n_unique() == report.valid
    assert_windows_exact(t["windows"], readings, 1.0, METRICS)


def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    prefix = f"rec/{uuid.uuid4().hex[:8]}"
    write_project(tmp_path, NAME, _pipeline(broker.url, prefix, receive_maximum=RM_KILL))
    worker = WorkerProcess(tmp_path, NAME)
    worker.wait_for(lambda s: True)  # subscribed: the persistent session exists
    publisher = _Publisher(broker.url, prefix, duplicate_fraction=0.02, out_of_order_fraction=0.05)
    publisher.start()
    try:
        worker.wait_for(lambda s: s["stored"] >= 400)
        worker.kill()  # between batches or mid-commit: whatever it was doing
        worker = WorkerProcess(tmp_path, NAME)
        worker.wait_for(lambda s: s["stored"] >= 300)
        worker.kill()
        worker = WorkerProcess(tmp_path, NAME)
        publisher.join(30)
        worker.finish()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nbroker log:\n{broker.log[-3000:]}") from exc
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
    _assert_exact(tmp_path, publisher.report)


def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, broker: PrivateMosquitto) -> None:
    prefix = f"rec/{uuid.uuid4().hex[:8]}"
    write_project(tmp_path, NAME, _pipeline(broker.url, prefix))
    config = load_config(tmp_path)
    processor = StreamProcessor(NAME, config.streams[NAME], config=config)
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(
        target=processor.run,
        args=(stop,),
        kwargs={"idle_exit": 4.0, "on_status": lambda _: ready.set()},
    )
    thread.start()
    publisher = _Publisher(broker.url, prefix, duration=3.0)
    try:
        assert ready.wait(10)
        publisher.start()
        deadline = time.monotonic() + 10
        while processor.status.stored < 800 and time.monotonic() < deadline:
            time.sleep(0.02)
        broker.restart()
        publisher.join(30)
        thread.join(40)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert processor.status.stored >= 800
    _assert_exact(tmp_path, publisher.report)


def test_slow_sink_slows_intake_and_memory_stays_bounded(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    prefix = f"rec/{uuid.uuid4().hex[:8]}"
    window = 200
    write_project(tmp_path, NAME, _pipeline(broker.url, prefix, receive_maximum=window))
    worker = WorkerProcess(tmp_path, NAME, "--slow", "0.1")
    try:
        worker.wait_for(lambda s: True)
        baseline = worker.status()["rss_kib"]
        publisher = _Publisher(broker.url, prefix, rate=6000.0, duration=0.5, realtime=False)
        publisher.start()
        publisher.join(30)
        assert publisher.report is not None
        total = publisher.report.total
        pending, rss = [], []
        behind = False
        while (s := worker.status()).get("messages", 0) < total and worker.proc.poll() is None:
            pending.append(s["pending"])
            rss.append(s["rss_kib"])
            behind = behind or s["messages"] < total // 2
            time.sleep(0.05)
        worker.finish()
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
    assert behind  # the publisher finished long before the slow processor: the broker held it
    # never more than the transport's inbox (twice the receive maximum) in process memory
    assert max(pending) <= 2 * window
    assert max(rss) - baseline < 100_000  # KiB: no queue grew with the backlog
    _assert_exact(tmp_path, publisher.report)
