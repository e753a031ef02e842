"""``loopline stream`` (simulate, run, alerts, gateway) against the real Mosquitto and NATS.

Each test writes its own ``loopline.yaml`` (stores under ``tmp_path``) with unique topics,
client ids and JetStream streams; persistent MQTT sessions are ended afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import polars as pl
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from tests.conftest import service_url
from tests.stream.private_server import free_port
from typer.testing import CliRunner

from loopline.cli.app import app
from loopline.config import load_config
from loopline.config.streams import MqttTransportConfig, NatsTransportConfig
from loopline.stream.decode import decode_batch
from loopline.stream.storage import StreamSink
from loopline.stream.transport import Delivery
from loopline.stream.transports.mqtt import MqttTransport
from loopline.stream.transports.nats import NatsTransport

pytestmark = pytest.mark.services
runner = CliRunner()
METRICS = ["temperature", "humidity", "vibration"]
NAME = "sensors"


def _loopline() -> list[str]:
    """The ``loopline`` console script beside this interpreter (``python -m loopline`` else)."""
    script = Path(sys.executable).with_name("loopline")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "loopline"]


class Project:
    """A project folder with one MQTT pipeline on a unique topic root and client id."""

    def __init__(self, folder: Path, **pipeline: Any) -> None:
        u = uuid.uuid4().hex[:10]
        self.folder, self.root, self.client_id = folder, f"cli-{u}", f"cli-proc-{u}"
        self.mqtt = MqttTransportConfig(
            url=service_url("mqtt"),
            topics=[f"{self.root}/+/+"],
            client_id=self.client_id,
            session_expiry=120,
        )
        spec: dict[str, Any] = {
            "transport": self.mqtt.model_dump(mode="json", exclude_none=True),
            "metrics": METRICS,
            "windows": [{"kind": "tumbling", "size": 1}],
            "sink": {"max_rows": 500, "max_delay": 0.2},
            **pipeline,
        }
        spec["transport"].pop("password", None)
        self.config: dict[str, Any] = {
            "project": "stream-cli",
            "stores": {
                "metadata_url": "sqlite:///.loopline/metadata.db",
                "warehouse_url": "duckdb:///.loopline/warehouse.duckdb",
                "lake_url": ".loopline/lake",
            },
            "streams": {NAME: spec},
        }
        self.write()

    @property
    def path(self) -> Path:
        return self.folder / "loopline.yaml"

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config), encoding="utf-8")

    def cli(self, *args: str) -> Any:
        return runner.invoke(app, [*args, "--config", str(self.path)])

    def open_session(self) -> None:
        """Create the pipeline's persistent session, so what is published now waits for it."""
        tx = MqttTransport(self.mqtt)
        tx.open()
        tx.close()

    def end_session(self) -> None:
        ender = MqttTransport(self.mqtt.model_copy(update={"session_expiry": 0, "topics": []}))
        ender.open()
        ender.close()

    def readings(self) -> pl.DataFrame:
        config = load_config(self.path)
        sink = StreamSink(NAME, config.streams[NAME], config=config)
        try:
            return sink.read_table("readings")
        finally:
            sink.close()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    yield proj
    proj.end_session()


def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    tx = MqttTransport(MqttTransportConfig(url=url))
    tx.open()
    try:
        for topic, payload in messages:
            tx.publish(topic, payload)
        tx.flush()
    finally:
        tx.close()


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class _Collector:
    """A paho subscriber counting what arrives (and whether it was ever disconnected)."""

    def __init__(self, topic: str, *, client_id: str = "") -> None:
        self.deliveries: list[Delivery] = []
        self.disconnects = 0
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        broker = urlsplit(service_url("mqtt"))
        self.client.connect(broker.hostname or "127.0.0.1", broker.port or 1883)
        self.client.loop_start()
        assert self._subscribed.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        self.deliveries.append(Delivery(payload, msg.topic, time.time_ns(), None))

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnects += 1

    def wait(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # extra copies would show
        return list(self.deliveries)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- simulate ---------------------------------------------------------------------------


def test_simulate_publishes_what_its_json_counts(tmp_path: Path) -> None:
    root = f"sim-{uuid.uuid4().hex[:10]}"
    collector = _Collector(f"{root}/#")
    truth = tmp_path / "truth.parquet"
    try:
        result = runner.invoke(app, [
            "stream", "simulate", "--url", service_url("mqtt"), "--devices", "5",
            "--rate", "300", "--duration", "1", "--topic", root + "/{site}/{device}",
            "--duplicates", "0.05", "--malformed", "0.05", "--anomaly-rate", "0.05",
            "--truth", str(truth), "--seed", "3", "--json",
        ])  # fmt: skip
        report = _json(result)
        got = collector.wait(report["total"])
    finally:
        collector.close()
    assert report["valid"] + report["malformed"] == 300  # rate x duration; copies come on top
    assert report["duplicates"] > 0
    assert report["malformed"] > 0
    assert report["anomalies"] > 0
    assert report["total"] == report["valid"] + report["duplicates"] + report["malformed"]
    assert len(got) == report["total"]
    decoded = decode_batch(
        got, fmt="json", id_field="msg_id", device_field="device", time_field="ts"
    )
    assert decoded.rejects.height == report["malformed"]
    assert decoded.frame.height == report["valid"] + report["duplicates"]
    assert decoded.frame["msg_id"].n_unique() == report["valid"]
    expected_topics = (pl.lit(root + "/") + pl.col("site") + "/" + pl.col("device")).alias("t")
    assert (decoded.frame.select(expected_topics)["t"] == decoded.frame["_topic"]).all()
    ground = pl.read_parquet(truth)
    assert ground["episode"].n_unique() == report["anomalies"]
    assert set(ground["msg_id"]) <= set(decoded.frame["msg_id"])


def test_simulate_into_a_pipeline_keeps_off_its_client_id(project: Project) -> None:
    reader = _Collector(f"{project.root}/#", client_id=project.client_id)
    try:
        sim = project.cli(
            "stream", "simulate", "--pipeline", NAME, "--devices", "4", "--rate", "200",
            "--duration", "0.5", "--topic", project.root + "/{site}/{device}", "--json",
        )  # fmt: skip
        report = _json(sim)
        got = reader.wait(report["total"])
        assert reader.disconnects == 0  # the simulator connected as <client_id>-pub
    finally:
        reader.close()
    assert report["total"] == report["valid"] == 100
    assert len(got) == 100


# -- run ----------------------------------------------------------------------------------


def test_run_drains_the_session_and_prints_exact_counts(project: Project) -> None:
    project.config["contracts"] = {
        "readings": {"columns": {"temperature": {"type": "float64", "min": -40, "max": 125}}}
    }
    project.config["streams"][NAME]["contract"] = "readings"
    project.write()
    project.open_session()
    messages: list[tuple[str, bytes]] = []
    now = time.time()
    for i in range(150):
        device = f"d{i % 5}"
        body = {"msg_id": f"m{i:04d}", "device": device, "ts": now + i * 0.01,
                "temperature": 20.0 + i % 7, "humidity": 40.0, "vibration": 1.0}  # fmt: skip
        messages.append((f"{project.root}/s1/{device}", json.dumps(body).encode()))
    messages += messages[:10]  # duplicates: the same bytes again
    messages += [(f"{project.root}/s1/d0", b'{"msg_id": "bad'), (f"{project.root}/s1/d1", b"\xff")]
    for i in range(3):  # contract violations: temperature above 125
        body = {"msg_id": f"hot{i}", "device": "d2", "ts": now, "temperature": 900.0}
        messages.append((f"{project.root}/s1/d2", json.dumps(body).encode()))
    _publish(project.mqtt.url, messages)
    status = _json(project.cli("stream", "run", NAME, "--idle-exit", "2", "--json"))
    assert (status["messages"], status["stored"]) == (165, 150)
    assert (status["duplicates"], status["invalid"]) == (10, 5)
    readings = project.readings()
    assert readings.height == 150
    assert set(readings["msg_id"]) == {f"m{i:04d}" for i in range(150)}


def test_sigterm_flushes_acks_and_exits_0_so_a_second_run_loses_and_doubles_nothing(
    project: Project,
) -> None:
    from loopline.stream.simulator import Simulator, SimulatorConfig
    from loopline.stream.transports.factory import create_transport

    project.open_session()
    log = project.folder / "run.log"
    out = project.folder / "run.json"
    with log.open("wb") as err, out.open("wb") as stdout:
        proc = subprocess.Popen(
            [*_loopline(), "-v", "stream", "run", NAME, "--json", "--config", str(project.path)],
            stdout=stdout,
            stderr=err,
        )
    sim = Simulator(
        SimulatorConfig(
            devices=10, rate=300, duration=3.0, seed=7, topic=project.root + "/{site}/{device}"
        )
    )
    publisher = create_transport(MqttTransportConfig(url=project.mqtt.url), subscribe=False)
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(sim.run(publisher)))
    publisher.open()
    try:
        deadline = time.monotonic() + 15
        while "connected to MQTT" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        thread.start()
        time.sleep(1.0)  # a third of the stream: the processor commits a few batches
        assert thread.is_alive(), "the stream ended before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=10)
        stopped_in = time.monotonic() - sent
        thread.join(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        publisher.close()
    assert code == 0, log.read_text()[-3000:]
    assert stopped_in < 4.0
    assert "Traceback" not in log.read_text()
    first = json.loads(out.read_text())
    assert 0 < first["stored"] == first["messages"]
    (report,) = reports
    assert first["messages"] < report.total  # it was stopped mid-stream
    second = _json(project.cli("stream", "run", NAME, "--idle-exit", "1", "--json"))
    assert second["duplicates"] == 0  # the first run acked everything it stored
    assert first["messages"] + second["messages"] == report.total
    readings = project.readings()
    assert readings.height == report.valid == report.total
    assert readings["msg_id"].n_unique() == report.valid


def test_simulate_into_a_nats_pipeline_and_run_its_two_workers(tmp_path: Path) -> None:
    from loopline.stream.transports.nats import partition_of

    u = uuid.uuid4().hex[:10]
    nats = NatsTransportConfig(
        url=service_url("nats"), stream=f"CLI_{u}", subject_prefix=f"cli.{u}", partitions=4,
        durable=f"c{u}", fetch_batch=100,
    )  # fmt: skip
    proj = Project(tmp_path)
    proj.config["streams"][NAME]["transport"] = nats.model_dump(mode="json", exclude_none=True)
    proj.write()
    try:
        sim = proj.cli(
            "stream", "simulate", "--pipeline", NAME, "--devices", "6", "--rate", "300",
            "--duration", "0.5", "--json",
        )  # fmt: skip
        report = _json(sim)
        runs = [
            _json(proj.cli("stream", "run", NAME, "--worker", str(w), "--workers", "2",
                           "--idle-exit", "0.5", "--json"))
            for w in (0, 1)
        ]  # fmt: skip
    finally:
        with NatsTransport(nats) as tx:
            tx.delete_stream()
    assert report["total"] == report["valid"] == 150
    readings = proj.readings()
    assert readings.height == 150
    assert readings["msg_id"].n_unique() == 150
    assert all(status["stored"] > 0 for status in runs)
    for worker, status in enumerate(runs):  # worker w read the partitions p % 2 == w only
        mine = {d for d in readings["device"] if partition_of(d, 4) % 2 == worker}
        assert status["stored"] == readings.filter(pl.col("device").is_in(mine)).height


# -- alerts -------------------------------------------------------------------------------


def test_alerts_lists_what_a_run_raised(tmp_path: Path) -> None:
    proj = Project(
        tmp_path,
        detectors=[{"kind": "zscore", "threshold": 4.0, "window": 16, "warmup": 8}],
        alerts={"cooldown": "1h"},
    )
    try:
        proj.open_session()
        sim = proj.cli(
            "stream", "simulate", "--pipeline", NAME, "--devices", "4", "--rate", "400",
            "--duration", "1", "--anomaly-rate", "0.03", "--seed", "11",
            "--topic", proj.root + "/{site}/{device}", "--json",
        )  # fmt: skip
        assert _json(sim)["anomalies"] > 0
        status = _json(proj.cli("stream", "run", NAME, "--idle-exit", "1", "--json"))
        assert status["stored"] == 400
        assert status["alerts"] > 0
        listed = _json(proj.cli("stream", "alerts", "--json"))
        table = proj.cli("stream", "alerts")
    finally:
        proj.end_session()
    assert len(listed) == status["alerts"]
    assert {a["pipeline"] for a in listed} == {NAME}
    assert {a["device"] for a in listed} <= {f"d{i:04d}" for i in range(4)}
    assert all(a["metric"] in METRICS for a in listed)
    times = [str(a["event_time"]) for a in listed]
    assert times == sorted(times, reverse=True)
    assert table.exit_code == 0
    assert "zscore" in table.stdout


def test_alerts_on_an_empty_project_says_so(tmp_path: Path) -> None:
    proj = Project(tmp_path)
    result = proj.cli("stream", "alerts")
    assert result.exit_code == 0, result.output
    assert "no alerts" in result.output
    assert _json(proj.cli("stream", "alerts", "--json")) == []


# -- gateway ------------------------------------------------------------------------------


def test_gateway_forwards_max_messages_into_jetstream(project: Project) -> None:
    u = uuid.uuid4().hex[:10]
    nats = NatsTransportConfig(
        url=service_url("nats"), stream=f"CLI_{u}", subject_prefix=f"cli.{u}", partitions=3,
        durable=f"c{u}", fetch_batch=100,
    )  # fmt: skip
    mqtt_gw = project.mqtt.model_copy(update={"client_id": f"cli-gw-{u}"})
    project.config["gateways"] = {
        "devices": {
            "mqtt": mqtt_gw.model_dump(mode="json", exclude_none=True),
            "nats": nats.model_dump(mode="json", exclude_none=True),
        }
    }
    project.write()
    gw_session = MqttTransport(mqtt_gw)
    gw_session.open()  # the gateway's session: readings published now wait for it
    gw_session.close()
    got: list[Delivery] = []
    try:
        messages = []
        for i in range(60):
            body = {"msg_id": f"m{i}", "device": f"d{i % 6}", "ts": time.time(), "temperature": 1.0}
            messages.append((f"{project.root}/s1/d{i % 6}", json.dumps(body).encode()))
        _publish(project.mqtt.url, messages)
        result = project.cli("stream", "gateway", "devices", "--max-messages", "60")
        assert result.exit_code == 0, result.output
        assert "forwarded 60 messages (0 unroutable)" in result.stdout
        with NatsTransport(nats) as consumer:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                batch = consumer.receive(100, 0.5)
                consumer.ack(batch)
                got += batch
                if not batch and len(got) >= 60:
                    break
    finally:
        with NatsTransport(nats) as tx:
            tx.delete_stream()
        ender = MqttTransport(mqtt_gw.model_copy(update={"session_expiry": 0, "topics": []}))
        ender.open()
        ender.close()
    assert sorted(d.msg_id or "" for d in got) == sorted(f"d{i % 6}/m{i}" for i in range(60))


# -- errors -------------------------------------------------------------------------------


def _assert_one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_unknown_pipeline_names_the_known_ones(project: Project, command: str) -> None:
    args = ["nope"] if command == "run" else ["--pipeline", "nope", "--duration", "0.1"]
    result = project.cli("stream", command, *args)
    _assert_one_line_error(result, "no stream pipeline named 'nope'", f"known=['{NAME}']")


def test_unknown_gateway_is_a_clear_error(project: Project) -> None:
    result = project.cli("stream", "gateway", "nope")
    _assert_one_line_error(result, "no gateway named 'nope'", "known=none")


@pytest.mark.parametrize("command", ["run", "simulate", "gateway"])
def test_unreachable_broker_is_a_clear_error(tmp_path: Path, command: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proj = Project(tmp_path)
    proj.config["streams"][NAME]["transport"]["url"] = f"mqtt://{dead}"
    proj.config["gateways"] = {  # the gateway connects to JetStream first
        "devices": {"mqtt": {"url": service_url("mqtt")}, "nats": {"url": f"nats://{dead}"}}
    }
    proj.write()
    args, message = {
        "run": (["run", NAME, "--idle-exit", "1"], "cannot connect to MQTT broker"),
        "simulate": (["simulate", "--url", f"mqtt://{dead}"], "cannot connect to MQTT broker"),
        "gateway": (["gateway", "devices", "--max-messages", "1"], "cannot connect to NATS"),
    }[command]
    result = proj.cli("stream", *args)
    _assert_one_line_error(result, message, dead)


def test_worker_options_are_refused_on_an_mqtt_pipeline(project: Project) -> None:
    result = project.cli("stream", "run", NAME, "--worker", "1", "--idle-exit", "0.1")
    _assert_one_line_error(result, "--worker / --workers", "NATS", "shared_group")


def test_simulate_refuses_a_memory_pipeline(project: Project) -> None:
    project.config["streams"][NAME]["transport"] = {"kind": "memory"}
    project.write()
    result = project.cli("stream", "simulate", "--pipeline", NAME, "--duration", "0.1")
    _assert_one_line_error(result, "memory transport")


def test_worker_out_of_range_is_a_config_error_not_a_traceback(project: Project) -> None:
    project.config["streams"][NAME]["transport"] = {
        "kind": "nats", "url": f"nats://127.0.0.1:{free_port()}", "partitions": 4,
    }  # fmt: skip
    project.write()
    result = project.cli("stream", "run", NAME, "--worker", "2", "--workers", "2")
    _assert_one_line_error(result, "worker 2 is out of range for workers=2")
