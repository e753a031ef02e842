"""Scale-out: devices → MQTT → gateway → JetStream partitions → two workers → one PostgreSQL.

Against the real Mosquitto, NATS JetStream and PostgreSQL servers. Simulated devices publish
to MQTT; a :class:`~loopline.stream.gateway.Gateway` forwards each device's readings to one
of four JetStream partitions; worker 0 consumes partitions 0 and 2, worker 1 partitions 1
and 3, both committing into one shared warehouse. Whatever happens (a worker killed with
SIGKILL and restarted included), the stored readings equal the unique valid readings
published, each once; every device was handled by one worker only; and each worker's
windows equal a brute-force aggregation of its own devices' stored readings.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from tests.conftest import service_url
from tests.stream.stream_worker import assert_windows_exact
from tests.stream.worker_process import WorkerProcess

from loopline.config import LooplineConfig, load_config
from loopline.config.streams import GatewayConfig, MqttTransportConfig, NatsTransportConfig
from loopline.store.destination import QUARANTINE_TABLE
from loopline.stream.gateway import Gateway
from loopline.stream.processor import StreamProcessor
from loopline.stream.simulator import SimulationReport, Simulator, SimulatorConfig
from loopline.stream.status import StreamStatus
from loopline.stream.storage import StreamSink
from loopline.stream.transports.factory import create_transport
from loopline.stream.transports.mqtt import MqttTransport
from loopline.stream.transports.nats import NatsTransport, partition_of

pytestmark = pytest.mark.services
NAME = "scale"
METRICS = ["temperature", "humidity", "vibration"]
PARTITIONS, WORKERS = 4, 2
WINDOW_S = 1.0
AGGREGATES = ["count", "mean", "min", "max"]


@dataclass
class Cluster:
    """Unique names for one test: MQTT topic root, JetStream stream / subjects / durables."""

    mqtt_url: str
    nats_url: str
    warehouse_url: str
    tag: str

    @property
    def root(self) -> str:
        return f"scale-{self.tag}"

    def nats(self, worker: int = 0) -> NatsTransportConfig:
        return NatsTransportConfig(
            url=self.nats_url, stream=f"SCALE_{self.tag}", subject_prefix=f"scale.{self.tag}",
            partitions=PARTITIONS, workers=WORKERS, worker=worker, durable=f"w{self.tag}",
            ack_wait=3.0, max_ack_pending=1000, fetch_batch=200,
        )  # fmt: skip

    def gateway(self) -> GatewayConfig:
        mqtt = MqttTransportConfig(
            url=self.mqtt_url, topics=[f"{self.root}/+/+"], qos=1,
            client_id=f"gw-{self.tag}", session_expiry=60, receive_maximum=500,
        )  # fmt: skip
        return GatewayConfig(mqtt=mqtt, nats=self.nats())

    def project(self, folder: Path, worker: int) -> LooplineConfig:
        """A project (one machine) running ``worker``; the warehouse is the shared one."""
        transport = self.nats(worker).model_dump(mode="json", exclude_none=True)
        pipeline = {
            "transport": transport,
            "metrics": METRICS,
            "windows": [{"kind": "tumbling", "size": WINDOW_S, "aggregates": AGGREGATES}],
            "watermark": {"delay": 0.5, "allowed_lateness": 3600, "late_policy": "update"},
            "detectors": [{"kind": "zscore", "threshold": 5.0, "warmup": 20}],
            "sink": {"max_rows": 500, "max_delay": 0.2},
        }
        stores = {
            "metadata_url": "sqlite:///.loopline/metadata.db",
            "warehouse_url": self.warehouse_url,
            "lake_url": ".loopline/lake",
        }
        folder.mkdir(parents=True, exist_ok=True)
        body = {"project": "scale-test", "stores": stores, "streams": {NAME: pipeline}}
        (folder / "loopline.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")
        return load_config(folder)


@pytest.fixture
def cluster(postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(service_url("mqtt"), service_url("nats"), postgres_url, uuid.uuid4().hex[:10])
    yield c
    with NatsTransport(c.nats()) as tx:
        tx.delete_stream()
    # a clean start with the same client id ends the gateway's persistent MQTT session
    mqtt = c.gateway().mqtt.model_copy(update={"session_expiry": 0, "topics": []})
    ender = MqttTransport(mqtt)
    ender.open()
    ender.close()


class _GatewayThread:
    """The gateway forwarding in the background (subscribed before devices publish)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.gateway = Gateway(config)
        self.gateway.open()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gateway.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def wait_forwarded(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.gateway.stats.forwarded < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.gateway.stats.forwarded >= n, self.gateway.stats

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.gateway.close()


def _publish(cluster: Cluster, **settings: Any) -> SimulationReport:
    devices = create_transport(MqttTransportConfig(url=cluster.mqtt_url, qos=1), subscribe=False)
    config: dict[str, Any] = {
        "devices": 20, "rate": 1000.0, "duration": 3.0, "seed": 11, "realtime": False,
        "duplicate_fraction": 0.03, "malformed_fraction": 0.01, "out_of_order_fraction": 0.05,
        "late_fraction": 0.02, "late_by": 3.0, "anomaly_rate": 0.005,
        "topic": cluster.root + "/{site}/{device}", **settings,
    }  # fmt: skip
    devices.open()
    try:
        return Simulator(SimulatorConfig(**config)).run(devices)
    finally:
        devices.close()


class _RecordingSink(StreamSink):
    """A sink that remembers the batch ids it committed (which worker stored which row)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_ids: set[str] = set()

    def commit(self, **parts: Any) -> None:
        super().commit(**parts)
        self.batch_ids.add(parts["batch_id"])


def _tables(config: LooplineConfig) -> dict[str, pl.DataFrame]:
    sink = StreamSink(NAME, config.streams[NAME], config=config)
    try:
        return {
            "readings": sink.read_table("readings"),
            "windows": sink.read_table("window_aggregates"),
            "quarantine": sink.read_table(QUARANTINE_TABLE),
            "states": pl.DataFrame(
                {"worker": [0, 1], "state": [json.dumps(_state(config, w)) for w in (0, 1)]}
            ),
        }
    finally:
        sink.close()


def _state(config: LooplineConfig, worker: int) -> dict[str, Any] | None:
    sink = StreamSink(NAME, config.streams[NAME], config=config, worker=worker)
    try:
        return sink.read_state()
    finally:
        sink.close()


def _worker_of_device(device: str) -> int:
    return partition_of(device, PARTITIONS) % WORKERS


def _assert_exact(
    t: dict[str, pl.DataFrame], report: SimulationReport, owner: pl.DataFrame, *, crashed: bool
) -> None:
    """Totals exact, no duplicates, one worker per device, exact windows per worker.

    ``owner``: ``_batch_id`` → ``worker`` for every reading batch committed.
    """
    readings, windows = t["readings"], t["windows"]
    assert readings.height == report.valid
    assert readings["msg_id"].n_unique() == report.valid
    # a malformed message redelivered after a crash is quarantined again (no id to dedupe)
    quarantined = t["quarantine"].height
    assert quarantined >= report.malformed if crashed else quarantined == report.malformed
    by_worker = readings.join(owner, on="_batch_id", how="left")
    assert by_worker["worker"].null_count() == 0
    per_device = by_worker.group_by("device").agg(pl.col("worker").unique())
    assert per_device.height == 20
    assert (per_device["worker"].list.len() == 1).all(), per_device
    for device, (worker,) in per_device.iter_rows():
        assert worker == _worker_of_device(device), device  # its partitions' worker
    assert set(by_worker["worker"]) == {0, 1}  # both workers did work
    # no worker emitted a window of another worker's device (recovery reads its own only)
    owners = per_device.select("device", pl.col("worker").list.first().alias("owner"))
    emitted = windows.join(owner, on="_batch_id", how="inner").join(owners, on="device")
    assert emitted.height > 0
    assert (emitted["worker"] == emitted["owner"]).all()
    for worker in (0, 1):
        mine = by_worker.filter(pl.col("worker") == worker)
        devices = mine["device"].unique()
        assert_windows_exact(
            windows.filter(pl.col("device").is_in(devices.implode())), mine, WINDOW_S, METRICS
        )
        state = json.loads(t["states"]["state"][worker])  # each worker keeps its own state
        assert state is not None
        assert state["watermarks"]["tumbling_1s"] is not None


def test_two_workers_share_the_partitions_with_exact_totals_and_windows(
    tmp_path: Path, cluster: Cluster
) -> None:
    gateway = _GatewayThread(cluster.gateway())
    stop = threading.Event()
    workers: list[tuple[StreamProcessor, _RecordingSink]] = []
    threads: list[threading.Thread] = []
    ready = [threading.Event() for _ in range(WORKERS)]
    try:
        for w in range(WORKERS):
            config = cluster.project(tmp_path / f"w{w}", w)
            sink = _RecordingSink(NAME, config.streams[NAME], config=config)
            processor = StreamProcessor(NAME, config.streams[NAME], config=config, sink=sink)
            workers.append((processor, sink))

            def on_status(_: StreamStatus, event: threading.Event = ready[w]) -> None:
                event.set()

            threads.append(
                threading.Thread(
                    target=processor.run,
                    args=(stop,),
                    kwargs={"idle_exit": 3.0, "on_status": on_status},
                )
            )
            threads[-1].start()
        assert all(event.wait(15) for event in ready)
        report = _publish(cluster)
        gateway.wait_forwarded(report.total)
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        gateway.close()
        for _, sink in workers:
            sink.close()
    assert gateway.gateway.stats.unroutable == 0
    owner = pl.DataFrame(
        [(b, w) for w, (_, sink) in enumerate(workers) for b in sink.batch_ids],
        schema={"_batch_id": pl.String, "worker": pl.Int64},
        orient="row",
    )
    statuses = [processor.status for processor, _ in workers]
    assert all(s.stored > 0 for s in statuses)
    assert sum(s.stored for s in statuses) == report.valid
    _assert_exact(_tables(load_config(tmp_path / "w0")), report, owner, crashed=False)


def test_a_worker_killed_mid_stream_and_restarted_keeps_totals_exact(
    tmp_path: Path, cluster: Cluster
) -> None:
    projects = [tmp_path / f"w{w}" for w in range(WORKERS)]
    for w, folder in enumerate(projects):
        cluster.project(folder, w)
    gateway = _GatewayThread(cluster.gateway())
    workers = [WorkerProcess(folder, NAME, idle_exit=5) for folder in projects]
    try:
        for worker in workers:
            worker.wait_for(lambda s: True)  # consumers exist, recovery done
        published: list[SimulationReport] = []
        devices = threading.Thread(
            # realtime, so the kill lands while readings still arrive
            target=lambda: published.append(_publish(cluster, realtime=True, rate=1200.0)),
            daemon=True,
        )
        devices.start()
        workers[0].wait_for(lambda s: s["stored"] >= 300)
        workers[0].kill()  # between batches or mid-commit: whatever it was doing
        workers[0] = WorkerProcess(projects[0], NAME, idle_exit=5)
        devices.join(30)
        assert published
        gateway.wait_forwarded(published[0].total)
        for worker in workers:
            worker.finish()
        assert workers[0].status()["messages"] > 0  # the restarted worker took over its own
    finally:
        gateway.close()
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
    t = _tables(load_config(projects[0]))
    # which worker stored a reading: the one consuming its partition (subject suffix)
    partition = pl.col("_topic").str.extract(r"\.(\d+)$").cast(pl.Int64)
    owner = t["readings"].select("_batch_id", (partition % WORKERS).alias("worker")).unique()
    assert owner["_batch_id"].n_unique() == owner.height  # no batch mixes two workers
    _assert_exact(t, published[0], owner, crashed=True)
