"""Alerts: cooldown and dedupe rules, the metadata table on SQLite and PostgreSQL, and
delivery to a real local webhook server and the real Mosquitto broker."""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pytest
from tests.conftest import service_url

from loopline.config.streams import AlertConfig
from loopline.errors import TransportError
from loopline.store.metadata import MetadataStore
from loopline.stream import alerts as alerts_module
from loopline.stream.alerts import AlertManager, alert_id, list_alerts

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


Row = tuple[str, str, str, float, str]


def anomalies(*rows: Row) -> pl.DataFrame:
    """Anomalies from ``row(...)``s; values 40, 41, ... and scores 5, 6, ... in order."""
    return pl.DataFrame(
        {
            "device": [r[0] for r in rows],
            "metric": [r[4] for r in rows],
            "detector": [r[1] for r in rows],
            "event_time": [T0 + timedelta(seconds=r[3]) for r in rows],
            "value": [40.0 + i for i in range(len(rows))],
            "score": [5.0 + i for i in range(len(rows))],
            "msg_id": [r[2] for r in rows],
        },
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )


def row(device: str, detector: str, msg_id: str, seconds: float, metric: str = "temp") -> Row:
    """One anomaly of ``device``'s ``metric`` at T0 + ``seconds``."""
    return (device, detector, msg_id, seconds, metric)


def manager(cooldown: float = 60.0, **options: Any) -> AlertManager:
    return AlertManager(AlertConfig(cooldown=cooldown, **options), pipeline="p", metadata=None)


@pytest.mark.parametrize("min_detectors", [1, 2])
def test_few_anomalies_alert_as_the_polars_grouping_does(
    min_detectors: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    rng = np.random.default_rng(4)
    batches = []
    for b in range(30):  # ties in time, repeated messages, two detectors, two metrics
        n = int(rng.integers(1, 12))
        rows_ = [
            row(
                f"d{rng.integers(3)}",
                str(rng.choice(["zscore", "ewma"])),
                f"m{b}-{rng.integers(6)}",
                b * 20 + float(rng.integers(4)),
                str(rng.choice(["temp", "hum"])),
            )
            for _ in range(n)
        ]
        frame = anomalies(*rows_).with_columns(pl.Series("score", rng.uniform(4, 9, n)))
        batches.append(frame)
    fast = manager(cooldown=30, min_detectors=min_detectors)
    python_rows = [fast.offer(b).drop("raised_at") for b in batches]
    monkeypatch.setattr(alerts_module, "FEW_ANOMALIES", 0)  # every batch through Polars
    slow = manager(cooldown=30, min_detectors=min_detectors)
    polars_rows = [slow.offer(b).drop("raised_at") for b in batches]
    assert sum(f.height for f in python_rows) > 10
    for got, expected in zip(python_rows, polars_rows, strict=True):
        assert got.to_dicts() == expected.to_dicts()
    assert fast.last_alert_ == slow.last_alert_


def test_cooldown_is_per_device_metric_and_detector_in_event_time() -> None:
    alerts = manager(cooldown=60)
    raised = alerts.offer(
        anomalies(
            row("d1", "zscore", "m1", 0),
            row("d1", "zscore", "m2", 59.999999),  # inside the cooldown
            row("d2", "zscore", "m3", 10),  # another device
            row("d1", "ewma", "m4", 20),  # another detector
            row("d1", "zscore", "m5", 30, metric="humidity"),  # another metric
        )
    )
    assert raised["msg_id"].to_list() == ["m1", "m3", "m4", "m5"]
    # Exactly at last + cooldown alerts again; events are taken in event-time order.
    raised = alerts.offer(anomalies(row("d1", "zscore", "m7", 61), row("d1", "zscore", "m6", 60)))
    assert raised["msg_id"].to_list() == ["m6"]
    assert raised.schema["event_time"] == pl.Datetime("us", "UTC")


def test_an_alert_restarts_the_cooldown_of_every_detector_in_it() -> None:
    alerts = manager(cooldown=60)
    assert alerts.offer(anomalies(row("d1", "zscore", "m1", 0))).height == 1
    both = alerts.offer(anomalies(row("d1", "zscore", "m2", 10), row("d1", "ewma", "m2", 10)))
    assert both["detectors"].to_list() == [["ewma", "zscore"]]  # ewma was not cooling down
    assert alerts.offer(anomalies(row("d1", "zscore", "m3", 60))).is_empty()
    assert alerts.offer(anomalies(row("d1", "zscore", "m4", 70))).height == 1


def test_a_message_and_metric_never_alert_twice() -> None:
    alerts = manager(cooldown=0)
    batch = anomalies(
        row("d1", "zscore", "m1", 0),
        row("d1", "ewma", "m1", 0),
        row("d1", "zscore", "m1", 0, metric="humidity"),
    )
    first = alerts.offer(batch)
    assert first.select("msg_id", "metric", "detectors").rows() == [
        ("m1", "humidity", ["zscore"]),
        ("m1", "temp", ["ewma", "zscore"]),
    ]
    assert first["score"].to_list() == [7.0, 6.0]  # the highest score of each group
    assert alerts.offer(batch).is_empty()  # a redelivered batch
    assert alerts.offer(anomalies(row("d1", "hst", "m1", 0))).is_empty()


def test_min_detectors_needs_that_many_detectors_on_one_message_and_metric() -> None:
    alerts = manager(cooldown=0, min_detectors=2)
    raised = alerts.offer(
        anomalies(
            row("d1", "zscore", "m1", 0),
            row("d1", "zscore", "m2", 1),
            row("d1", "ewma", "m2", 1),
            row("d1", "zscore", "m3", 2),
            row("d1", "ewma", "m3", 2, metric="humidity"),
        )
    )
    assert raised.select("msg_id", "detectors").rows() == [("m2", ["ewma", "zscore"])]


def test_no_anomalies_raise_an_empty_frame_with_the_alert_columns() -> None:
    empty = anomalies().clear()
    raised = manager().offer(empty)
    assert raised.is_empty()
    assert raised.columns[:3] == ["alert_id", "pipeline", "device"]


def test_naive_event_times_are_taken_as_utc() -> None:
    naive = anomalies(row("d1", "zscore", "m1", 0)).with_columns(
        pl.col("event_time").dt.replace_time_zone(None)
    )
    assert manager().offer(naive)["event_time"].to_list() == [T0]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    """A fresh metadata database that has the stream_alerts table."""
    url = "sqlite:///meta.db"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    opened = MetadataStore(url, base_dir=tmp_path)
    yield opened
    opened.close()


def test_alerts_are_recorded_and_listed_newest_first(store: MetadataStore) -> None:
    plant = AlertManager(AlertConfig(cooldown=0), pipeline="plant", metadata=store)
    other = AlertManager(AlertConfig(cooldown=0), pipeline="other", metadata=store)
    plant.offer(anomalies(row("d1", "zscore", "m1", 0), row("d1", "ewma", "m1", 0)))
    plant.offer(anomalies(row("d2", "zscore", "m2", 30), row("d3", "zscore", "m3", 10)))
    other.offer(anomalies(row("d9", "hst", "x1", 99)))
    listed = list_alerts(store, pipeline="plant")
    assert [a["msg_id"] for a in listed] == ["m2", "m3", "m1"]
    first = listed[-1]
    assert first["alert_id"] == alert_id("plant", "m1", "temp")
    assert first["detectors"] == ["ewma", "zscore"]
    assert first["event_time"] == T0
    assert (first["device"], first["metric"], first["value"], first["score"]) == (
        "d1", "temp", 40.0, 6.0
    )  # fmt: skip
    assert first["raised_at"].tzinfo is not None
    assert [a["msg_id"] for a in list_alerts(store, limit=2)] == ["x1", "m2"]


def test_a_restarted_manager_remembers_alerts_and_cooldowns(store: MetadataStore) -> None:
    config = AlertConfig(cooldown=60)
    AlertManager(config, pipeline="p", metadata=store).offer(
        anomalies(row("d1", "zscore", "m1", 0))
    )
    again = AlertManager(config, pipeline="p", metadata=store)
    assert again.offer(anomalies(row("d1", "ewma", "m1", 0))).is_empty()  # same message
    assert again.offer(anomalies(row("d1", "zscore", "m2", 30))).is_empty()  # cooling down
    assert again.offer(anomalies(row("d1", "zscore", "m3", 60))).height == 1
    assert len(list_alerts(store, pipeline="p")) == 2


class _Webhook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on a free port that keeps the JSON bodies POSTed to it."""
    bodies: list[dict[str, Any]] = []
    handler = type("Handler", (_Webhook,), {"bodies": bodies})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_webhook_gets_a_slack_compatible_body(
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, bodies = webhook
    alerts = AlertManager(AlertConfig(webhook_url=url), pipeline="plant", metadata=None)
    alerts.offer(anomalies(row("d1", "zscore", "m1", 0), row("d2", "ewma", "m2", 5)))
    [body] = bodies
    assert body["text"].startswith("*loopline stream plant: 2 anomaly alert(s)*\n• d1 temp=40.0")
    assert "(zscore; score 5)" in body["text"]
    assert body["loopline"]["pipeline"] == "plant"
    first = body["loopline"]["alerts"][0]
    assert first["msg_id"] == "m1"
    assert first["detectors"] == ["zscore"]
    assert first["event_time"] == T0.isoformat()
    assert alerts.offer(anomalies(row("d1", "zscore", "m1", 0))).is_empty()
    assert len(bodies) == 1  # nothing new, nothing posted


def test_a_failing_webhook_or_publisher_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def publish(topic: str, payload: bytes) -> None:
        raise TransportError("broker gone", topic=topic)

    config = AlertConfig(webhook_url=f"http://127.0.0.1:{port}/", mqtt_topic="alerts")
    alerts = AlertManager(config, pipeline="p", metadata=None, publish=publish)
    with caplog.at_level(logging.WARNING, logger="loopline.stream.alerts"):
        raised = alerts.offer(anomalies(row("d1", "zscore", "m1", 0)))
    assert raised.height == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreachable" in m for m in messages)
    assert any("not published to alerts" in m for m in messages)


@pytest.mark.services
def test_alerts_are_published_to_the_mqtt_topic() -> None:
    import paho.mqtt.client as mqtt

    parsed = urlparse(service_url("mqtt"))
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 1883
    topic = f"loopline/test/alerts/{uuid.uuid4().hex}"
    received: list[bytes] = []
    subscribed, arrived = threading.Event(), threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        received.append(message.payload)
        arrived.set()

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4()}")
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
    subscriber.connect(host, port)
    subscriber.loop_start()
    publisher.connect(host, port)
    publisher.loop_start()
    try:
        assert subscribed.wait(5)

        def publish(to: str, payload: bytes) -> None:
            publisher.publish(to, payload, qos=1).wait_for_publish(5)

        config = AlertConfig(mqtt_topic=topic)
        alerts = AlertManager(config, pipeline="plant", metadata=None, publish=publish)
        alerts.offer(anomalies(row("d7", "zscore", "m1", 0)))
        assert arrived.wait(5)
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()
    alert = json.loads(received[0])
    assert (alert["pipeline"], alert["device"], alert["msg_id"]) == ("plant", "d7", "m1")
    assert alert["detectors"] == ["zscore"]
    assert alert["event_time"] == T0.isoformat()
    assert alert["value"] == 40.0
