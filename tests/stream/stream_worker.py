"""Helpers for the processor tests, and a processor run as its own process (to kill -9 it).

    python tests/stream/stream_worker.py PROJECT_DIR PIPELINE [--slow S] [--status FILE]

runs ``StreamProcessor(PIPELINE)`` from ``PROJECT_DIR/loopline.yaml`` until SIGTERM (or 30 s
without a message), writing its status (messages, stored, pending, RSS) as JSON to FILE
after every batch. ``--slow S`` wraps the sink so every commit first sleeps S seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from loopline.config import load_config
from loopline.stream.processor import StreamProcessor
from loopline.stream.status import StreamStatus
from loopline.stream.storage import StreamSink

AGGREGATES = ("count", "mean", "min", "max")


def write_project(folder: Path, name: str, pipeline: dict[str, Any]) -> Path:
    """A ``loopline.yaml`` in ``folder`` with one stream pipeline; stores under the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "stream-test",
        "stores": {
            "metadata_url": "sqlite:///.loopline/metadata.db",
            "warehouse_url": "duckdb:///.loopline/warehouse.duckdb",
            "lake_url": ".loopline/lake",
        },
        "streams": {name: pipeline},
    }
    path = folder / "loopline.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def brute_force_tumbling(
    readings: pl.DataFrame, size_s: float, metrics: list[str], *, device: str = "device"
) -> pl.DataFrame:
    """Tumbling-window count / mean / min / max per device, window and metric, from scratch."""
    every = f"{int(size_s * 1_000_000)}us"
    long = readings.unpivot(
        index=[device, "ts"], on=metrics, variable_name="metric", value_name="value"
    ).with_columns(pl.col("ts").dt.truncate(every).alias("window_start"))
    return (
        long.group_by(device, "window_start", "metric")
        .agg(
            pl.col("value").count().alias("count"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"),
        )
        .filter(pl.col("count") > 0)
        .sort(device, "window_start", "metric")
    )


def assert_windows_exact(
    windows: pl.DataFrame, readings: pl.DataFrame, size_s: float, metrics: list[str]
) -> None:
    """The stored tumbling windows equal the aggregation of the stored readings."""
    expected = brute_force_tumbling(readings, size_s, metrics)
    got = (
        windows.filter(pl.col("count") > 0)
        .select("device", "window_start", "metric", *AGGREGATES)
        .sort("device", "window_start", "metric")
    )
    assert got.height == expected.height, (got.height, expected.height)
    assert got["count"].to_list() == expected["count"].to_list()
    for column in ("mean", "min", "max"):
        diff = (got[column] - expected[column]).abs().max()
        assert diff is not None
        assert float(diff) < 1e-9, column  # type: ignore[arg-type]
    assert got["window_start"].to_list() == expected["window_start"].to_list()


class SlowSink(StreamSink):
    """A sink whose every commit first sleeps (a slow warehouse)."""

    delay = 0.0

    def commit(self, **parts: Any) -> None:
        time.sleep(self.delay)
        super().commit(**parts)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("project")
    parser.add_argument("pipeline")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--status")
    parser.add_argument("--idle-exit", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.project)
    pipeline = config.streams[args.pipeline]
    sink: StreamSink | None = None
    if args.slow:
        SlowSink.delay = args.slow
        sink = SlowSink(args.pipeline, pipeline, config=config)
    processor = StreamProcessor(args.pipeline, pipeline, config=config, sink=sink)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status_path = Path(args.status) if args.status else None

    def report(status: StreamStatus) -> None:
        if status_path is None:
            return
        body = {
            "messages": status.messages,
            "stored": status.stored,
            "pending": status.pending,
            "batches": status.batches,
            "rss_kib": _rss_kib(),
            "pid": os.getpid(),
        }
        tmp = status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(status_path)

    try:
        processor.run(stop, idle_exit=args.idle_exit, on_status=report)
    finally:
        if sink is not None:
            sink.close()


if __name__ == "__main__":
    main()
