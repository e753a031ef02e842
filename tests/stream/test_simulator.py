"""The device simulator: determinism, exact counts, faults and anomalies as reported, pacing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loopline.config.streams import MemoryTransportConfig
from loopline.errors import ConfigError
from loopline.stream.decode import decode_batch
from loopline.stream.simulator import Simulator, SimulatorConfig, to_payloads
from loopline.stream.transport import Delivery
from loopline.stream.transports.memory import MemoryBroker, MemoryTransport

START = 1_714_564_800.0  # 2024-05-01T12:00:00Z


class Recorder:
    """A transport that only records what is published, and when."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str | None, float]] = []
        self.flushed = 0

    def publish(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> None:
        self.sent.append((topic, payload, msg_id, time.time()))

    def flush(self, timeout: float = 10.0) -> None:
        self.flushed += 1

    def deliveries(self) -> list[Delivery]:
        return [Delivery(p, t, int(at * 1e9), msg_id=i) for t, p, i, at in self.sent]


def config(**overrides: Any) -> SimulatorConfig:
    base: dict[str, Any] = {
        "devices": 20,
        "rate": 2000.0,
        "duration": 3.0,
        "start": START,
        "seed": 7,
        "realtime": False,
    }
    return SimulatorConfig(**(base | overrides))


FAULTY = {
    "anomaly_rate": 0.01,
    "malformed_fraction": 0.02,
    "late_fraction": 0.02,
    "late_by": 0.5,
    "out_of_order_fraction": 0.03,
    "out_of_order_window": 0.2,
    "duplicate_fraction": 0.02,
}


def decode(deliveries: list[Delivery], fmt: str = "json") -> Any:
    return decode_batch(
        deliveries,
        fmt=fmt,  # type: ignore[arg-type]
        id_field="msg_id",
        device_field="device",
        time_field="ts",
    )


def test_same_seed_same_stream_and_another_seed_another() -> None:
    def stream(seed: int) -> tuple[list[bytes], pl.DataFrame]:
        batches = list(Simulator(config(seed=seed, **FAULTY)).batches())
        return [p for b in batches for p in b.payloads], pl.concat(b.truth for b in batches)

    first, again, other = stream(1), stream(1), stream(2)
    assert first[0] == again[0]
    assert first[1].equals(again[1])
    assert first[0] != other[0]


def test_report_counts_equal_what_the_transport_received() -> None:
    broker = MemoryBroker(capacity=50_000)
    transport = MemoryTransport(
        MemoryTransportConfig(capacity=50_000), broker=broker, topics=("sensors/#",)
    )
    transport.open()
    try:
        report = Simulator(config(**FAULTY)).run(transport)
        received: list[Delivery] = []
        while batch := transport.receive(10_000, timeout=0.2):
            received.extend(batch)
            transport.ack(batch)
    finally:
        transport.close()
    assert report.total == len(received) == 6000 + report.duplicates
    out = decode(received)
    ids = out.frame["msg_id"]
    assert ids.n_unique() == report.valid == report.total_unique_valid
    assert out.frame.height - ids.n_unique() == report.duplicates > 0
    assert dict(Counter(out.rejects["_rule"].to_list())) == report.expected_rejects()
    assert report.malformed == out.rejects.height > 0
    assert set(report.malformed_by_kind) == {"truncated", "garbage", "missing_device", "bad_ts"}
    assert report.late > 0
    assert report.out_of_order > 0
    assert report.anomalies > 0
    assert report.valid + report.malformed == 6000  # every reading sent once, valid or not


def test_duplicates_repeat_the_exact_payload_and_msg_id() -> None:
    recorder = Recorder()
    report = Simulator(config(duplicate_fraction=0.05)).run(recorder)
    by_id: dict[str, list[bytes]] = {}
    for _, payload, msg_id, _ in recorder.sent:
        assert msg_id is not None
        by_id.setdefault(msg_id, []).append(payload)
    repeated = {k: v for k, v in by_id.items() if len(v) > 1}
    assert len(repeated) == report.duplicates > 0
    assert all(len(v) == 2 and v[0] == v[1] for v in repeated.values())
    assert all(json.loads(v[0])["msg_id"] == k for k, v in repeated.items())
    assert recorder.flushed == 1


def test_late_and_out_of_order_messages_arrive_behind_newer_ones() -> None:
    recorder = Recorder()
    report = Simulator(config(**FAULTY)).run(recorder)
    frame = decode(recorder.deliveries()).frame.unique("msg_id", keep="first", maintain_order=True)
    ts = frame["ts"].dt.epoch("us").to_numpy() / 1e6
    newest, lags = -1.0, []
    for t in ts:
        lags.append(max(0.0, newest - t))
        newest = max(newest, t)
    late = sum(lag >= 0.4 for lag in lags)  # held late_by=0.5 s; disorder is at most 0.2 s
    disordered = sum(0 < lag < 0.4 for lag in lags)
    assert late == report.late > 0
    assert disordered == report.out_of_order > 0


def test_malformed_payloads_fail_decoding_by_the_expected_rules() -> None:
    for fmt in ("json", "msgpack"):
        recorder = Recorder()
        report = Simulator(config(malformed_fraction=0.05, fmt=fmt)).run(recorder)
        out = decode(recorder.deliveries(), fmt)
        assert dict(Counter(out.rejects["_rule"].to_list())) == report.expected_rejects(fmt)  # type: ignore[arg-type]
        assert out.frame.height == report.valid == 6000 - report.malformed
        sent_ids = {msg_id for _, _, msg_id, _ in recorder.sent}
        assert len(sent_ids) == 6000  # a malformed message still carries its reading's id
        assert not set(out.frame["msg_id"]) & {
            recorder.sent[p][2] for p in out.rejects["_pos"].to_list()
        }


def test_anomalies_are_in_the_ground_truth_and_visible_in_the_data(tmp_path: Path) -> None:
    path = tmp_path / "truth" / "truth.parquet"
    recorder = Recorder()
    report = Simulator(config(anomaly_rate=0.01, anomaly_length=10)).run(recorder, truth_path=path)
    truth = pl.read_parquet(path)
    assert truth.equals(report.truth)
    assert set(truth["kind"]) == {"spike", "stuck", "level_shift"}
    assert set(truth["metric"]) == {"temperature", "humidity", "vibration"}
    assert report.anomalies == truth["episode"].n_unique()
    readings = decode(recorder.deliveries()).frame
    long = readings.unpivot(
        ["temperature", "humidity", "vibration"], index=["msg_id", "device"], variable_name="metric"
    )
    stats = long.group_by("device", "metric").agg(
        median=pl.col("value").median(),
        sigma=1.4826 * (pl.col("value") - pl.col("value").median()).abs().median(),
    )
    seen = truth.join(long, on=["msg_id", "device", "metric"]).join(stats, on=["device", "metric"])
    assert seen.height == truth.height
    seen = seen.with_columns(z=((pl.col("value") - pl.col("median")) / pl.col("sigma")).abs())
    spikes = seen.filter(pl.col("kind") == "spike")
    assert spikes.height > 0
    assert float(spikes["z"].min()) > 4  # type: ignore[arg-type]
    shifts = (
        seen.filter(pl.col("kind") == "level_shift").group_by("episode").agg(pl.col("z").mean())
    )
    assert float(shifts["z"].min()) > 3  # type: ignore[arg-type]
    stuck = (
        seen.filter(pl.col("kind") == "stuck")
        .group_by("episode")
        .agg(pl.col("value").n_unique().alias("values"), pl.len())
    )
    assert stuck["values"].max() == 1
    assert stuck["len"].max() == 10
    truth_ts = truth.join(readings.select("msg_id", pl.col("ts").alias("read_ts")), on="msg_id")
    assert (truth_ts["ts"] == truth_ts["read_ts"]).all()


def test_realtime_run_is_paced_and_stamped_with_the_clock() -> None:
    recorder = Recorder()
    before = time.time()
    report = Simulator(config(rate=2000.0, duration=1.0, start=None, realtime=True)).run(recorder)
    assert report.total == 2000
    assert 0.8 <= report.elapsed <= 1.2
    assert 1600 <= report.rate <= 2400
    frame = decode(recorder.deliveries()).frame
    ts = frame["ts"].dt.epoch("us").to_numpy() / 1e6
    published = frame["_received_ns"].to_numpy() / 1e9
    assert ts.min() >= before - 0.01
    lag = published - ts
    assert lag.min() > -0.005  # never published before its event time
    assert float(sorted(lag)[len(lag) // 2]) < 0.1  # batching adds at most ~1 tick (20 ms)


def test_stop_ends_the_run_early_with_exact_counts() -> None:
    recorder = Recorder()
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        report = Simulator(
            config(duration=5.0, realtime=True, start=None, duplicate_fraction=0.05)
        ).run(recorder, stop=stop)
    finally:
        timer.cancel()
    assert report.elapsed < 2.0
    assert 0 < report.total == len(recorder.sent) < 10_000
    assert report.valid == len({m for _, _, m, _ in recorder.sent})


def test_to_payloads_writes_one_json_object_per_row() -> None:
    frame = pl.DataFrame({"device": ["d1", "d2"], "ts": [1.5, 2.0], "n": [1, None]})
    payloads = to_payloads(frame)
    assert [json.loads(p) for p in payloads] == frame.to_dicts()
    assert to_payloads(frame.clear()) == []


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"devices": 0}, "devices"),
        ({"rate": 0}, "rate"),
        ({"duration": float("inf")}, "duration"),
        ({"late_fraction": 1.5}, "late_fraction"),
        ({"late_fraction": 0.6, "malformed_fraction": 0.6}, "*_fraction"),
        ({"anomaly_kinds": ("spike", "wobble")}, "anomaly_kinds"),
        ({"topic": "sensors/{room}"}, "topic"),
    ],
)
def test_bad_config_is_refused_when_built(overrides: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name.replace("*", r"\*")):
        config(**overrides)
