"""StreamSink: one transaction per micro-batch (three commits on the lake), idempotent merges,
state with readings, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from loopline.config import LooplineConfig
from loopline.config.stores import StoresConfig
from loopline.config.streams import StreamPipelineConfig
from loopline.errors import SinkError
from loopline.store.destination import QUARANTINE_TABLE
from loopline.stream.storage import ANOMALY_SCHEMA, StreamSink

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _pipeline(kind: str = "warehouse", **sink: object) -> StreamPipelineConfig:
    return StreamPipelineConfig.model_validate(
        {
            "transport": {"kind": "memory"},
            "metrics": ["temperature"],
            "sink": {"kind": kind, **sink},
        }
    )


def _readings(ids: list[str], minutes: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "msg_id": ids,
            "device": ["d1"] * len(ids),
            "ts": [T0 + timedelta(minutes=m) for m in minutes],
            "temperature": [20.0 + i for i in range(len(ids))],
            "_topic": ["sensors/s1/d1"] * len(ids),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def _windows(start_minute: int, mean: float, revision: int = 0) -> pl.DataFrame:
    start = T0 + timedelta(minutes=start_minute)
    return pl.DataFrame(
        {
            "window": ["tumbling_60s"],
            "device": ["d1"],
            "window_start": [start],
            "window_end": [start + timedelta(minutes=1)],
            "metric": ["temperature"],
            "count": [2],
            "mean": [mean],
            "revision": [revision],
        },
        schema_overrides={
            "window_start": pl.Datetime("us", "UTC"),
            "window_end": pl.Datetime("us", "UTC"),
            "revision": pl.Int32,
        },
    )


def _anomalies(msg_id: str, minute: int) -> pl.DataFrame:
    return pl.DataFrame(
        [("d1", "temperature", "zscore", T0 + timedelta(minutes=minute), 99.0, 7.5, msg_id)],
        schema=ANOMALY_SCHEMA,
        orient="row",
    )


def _quarantine(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_rule": ["decode:json"] * n,
            "_column": [None] * n,
            "_raw_value": ["{bad"] * n,
            "_record": ["{bad"] * n,
        },
        schema_overrides={"_column": pl.String},
    )


def _commit(
    sink: StreamSink,
    batch: str,
    readings: pl.DataFrame,
    *,
    new_anomalies: bool = False,
    **parts: pl.DataFrame,
) -> None:
    sink.commit(
        readings=readings,
        quarantine=parts.get("quarantine", _quarantine(0)),
        windows=parts.get("windows", pl.DataFrame()),
        anomalies=parts.get("anomalies", pl.DataFrame(schema=ANOMALY_SCHEMA)),
        watermarks={"tumbling_60s": (T0 + timedelta(minutes=len(batch))).isoformat()},
        batch_id=batch,
        new_anomalies=new_anomalies,
    )


def _exercise(sink: StreamSink) -> None:
    s = sink.settings
    _commit(
        sink,
        "b1",
        _readings(["a", "b"], [0, 1]),
        windows=_windows(0, 20.5),
        anomalies=_anomalies("b", 1),
        quarantine=_quarantine(2),
    )
    # A second batch updates the same window (late data) and the same anomaly again.
    _commit(
        sink,
        "b22",
        _readings(["c"], [0]),
        windows=_windows(0, 21.0, revision=1),
        anomalies=_anomalies("b", 1),
    )
    readings = sink.read_table(s.readings_table)
    assert sorted(readings["msg_id"].to_list()) == ["a", "b", "c"]
    assert set(readings["_source"]) == {"stream:t"}
    assert readings["_ingested_at"].null_count() == 0
    windows = sink.read_table(s.windows_table)
    assert windows.select("mean", "revision").rows() == [(21.0, 1)]
    assert sink.read_table(s.anomalies_table).height == 1
    quarantine = sink.read_table(QUARANTINE_TABLE)
    assert quarantine.height == 2
    assert set(quarantine["_source"]) == {"stream:t"}
    state = sink.read_state()
    assert state is not None
    assert state["watermarks"] == {"tumbling_60s": (T0 + timedelta(minutes=3)).isoformat()}
    # Recovery reads: by event time and by ingestion time, this pipeline's rows only.
    since = sink.read_readings("ts", T0 + timedelta(seconds=30), ["device", "ts", "temperature"])
    assert since["msg_id" if "msg_id" in since.columns else "temperature"].len() == 1
    recent = sink.read_readings("_ingested_at", datetime.now(UTC) - timedelta(hours=1), ["msg_id"])
    assert sorted(recent["msg_id"].to_list()) == ["a", "b", "c"]


def test_warehouse_sink_commits_merges_and_keeps_state(tmp_path: Path) -> None:
    sink = StreamSink("t", _pipeline(), config=LooplineConfig(project_dir=tmp_path))
    try:
        _exercise(sink)
    finally:
        sink.close()


def test_lake_sink_commits_merges_and_keeps_state(tmp_path: Path) -> None:
    sink = StreamSink("t", _pipeline("lake"), config=LooplineConfig(project_dir=tmp_path))
    try:
        _exercise(sink)
    finally:
        sink.close()


@pytest.mark.services
def test_postgres_sink_commits_merges_and_keeps_state(tmp_path: Path, postgres_url: str) -> None:
    config = LooplineConfig(stores=StoresConfig(warehouse_url=postgres_url), project_dir=tmp_path)
    sink = StreamSink("t", _pipeline(), config=config)
    try:
        _exercise(sink)
    finally:
        sink.close()


def test_warehouse_sink_commits_a_micro_batch_in_one_transaction(tmp_path: Path) -> None:
    sink = StreamSink("t", _pipeline(), config=LooplineConfig(project_dir=tmp_path))
    try:
        _commit(sink, "b1", _readings(["a"], [0]), anomalies=_anomalies("a", 0))
        bad = _anomalies("b", 1).with_columns(pl.lit("high").alias("score"))  # not a number
        with pytest.raises(SinkError) as info:
            _commit(
                sink,
                "b22",
                _readings(["b"], [1]),
                windows=_windows(0, 20.5),
                anomalies=bad,
                quarantine=_quarantine(1),
            )
        assert info.value.fields["table"] == "anomalies"
        # nothing of the failed batch is stored: readings, windows, quarantine, state
        assert sink.read_table("readings")["msg_id"].to_list() == ["a"]
        assert "window_aggregates" not in sink.destination.tables()  # type: ignore[attr-defined]
        assert QUARANTINE_TABLE not in sink.destination.tables()  # type: ignore[attr-defined]
        state = sink.read_state()
        assert state is not None
        assert state["watermarks"] == {"tumbling_60s": (T0 + timedelta(minutes=2)).isoformat()}
    finally:
        sink.close()


def test_new_anomalies_are_appended_and_replaced_when_their_batch_is_recommitted(
    tmp_path: Path,
) -> None:
    sink = StreamSink("t", _pipeline(), config=LooplineConfig(project_dir=tmp_path))
    try:
        for _ in range(2):  # the second time: a retry after a lost connection
            _commit(
                sink, "b1", _readings(["a"], [0]), anomalies=_anomalies("a", 0), new_anomalies=True
            )
        assert sink.read_table("anomalies")["msg_id"].to_list() == ["a"]
        assert sink.read_table("readings")["msg_id"].to_list() == ["a"]
    finally:
        sink.close()


@pytest.mark.parametrize("kind", ["warehouse", "lake"])
def test_retention_deletes_old_rows_but_not_what_recovery_needs(tmp_path: Path, kind: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    sink = StreamSink(
        "t", _pipeline(kind, retention="1h"), config=LooplineConfig(project_dir=tmp_path)
    )
    try:
        old, recent = now - timedelta(hours=3), now - timedelta(minutes=5)
        readings = _readings(["old", "mid", "new"], [0, 0, 0]).with_columns(
            pl.Series("ts", [old, now - timedelta(hours=2), recent], dtype=pl.Datetime("us", "UTC"))
        )
        windows = pl.concat(
            [
                _windows(0, 1.0).with_columns(
                    pl.lit(old).cast(pl.Datetime("us", "UTC")).alias("window_end")
                ),
                _windows(1, 2.0).with_columns(
                    pl.lit(recent).cast(pl.Datetime("us", "UTC")).alias("window_end")
                ),
            ]
        )
        anomalies = pl.concat([_anomalies("old", 0), _anomalies("new", 0)]).with_columns(
            pl.Series("event_time", [old, recent], dtype=pl.Datetime("us", "UTC"))
        )
        _commit(sink, "b1", readings, windows=windows, anomalies=anomalies)
        # Recovery still needs readings from 2.5 h ago: only the 3 h old ones may go.
        assert sink.enforce_retention(keep_after=now - timedelta(minutes=150)) == 3
        assert sorted(sink.read_table("readings")["msg_id"]) == ["mid", "new"]
        assert sink.enforce_retention() == 0  # at most once a minute
        assert sink.enforce_retention(force=True) == 1
        assert sink.read_table("readings")["msg_id"].to_list() == ["new"]
        assert sink.read_table("window_aggregates")["mean"].to_list() == [2.0]
        assert sink.read_table("anomalies")["msg_id"].to_list() == ["new"]
    finally:
        sink.close()
