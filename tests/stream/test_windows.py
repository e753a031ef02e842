"""Event-time windows: exact aggregates, lateness policies, sessions, restore after a crash.

Pure Polars, no services. Exact numbers come from hand-computed data and NumPy; the random
streams are checked against a brute-force reference (plain ``group_by`` over the rows each
window accepted) and against an uninterrupted run when the operator is restored mid-stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from loopline.config.streams import WatermarkConfig, WindowConfig
from loopline.errors import ConfigError
from loopline.stream.windows import WindowOperator, WindowOutput

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a multiple of every window size used here
T0_US = int(T0.timestamp()) * 1_000_000
ALL_AGGS = ["count", "mean", "min", "max", "std", "p50", "p90", "p95", "p99"]
MERGE_KEY = ["window", "device", "window_start", "metric"]


def make_op(
    kind: str = "tumbling",
    *,
    size: float | None = 10,
    slide: float | None = None,
    gap: float | None = None,
    delay: float = 0,
    lateness: float = 30,
    policy: str = "update",
    aggs: Sequence[str] = ALL_AGGS,
    metrics: Sequence[str] = ("temp",),
) -> WindowOperator:
    window = WindowConfig.model_validate(
        {"kind": kind, "size": size, "slide": slide, "gap": gap, "aggregates": list(aggs)}
    )
    mark = WatermarkConfig(delay=delay, allowed_lateness=lateness, late_policy=policy)  # type: ignore[arg-type]
    return WindowOperator(window, mark, key="device", time="ts", metrics=list(metrics))


def rows(
    device: str | Sequence[str], seconds: Sequence[float], **metrics: Sequence[float | None]
) -> pl.DataFrame:
    devices = [device] * len(seconds) if isinstance(device, str) else list(device)
    times = [T0 + timedelta(seconds=s) for s in seconds]
    data: dict[str, object] = {"device": devices, "ts": times}
    data.update({k: list(v) for k, v in metrics.items()})
    return pl.DataFrame(data).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def secs(column: pl.Series) -> list[float]:
    return [(v - T0).total_seconds() for v in column.to_list()]


def final(outputs: Sequence[WindowOutput]) -> pl.DataFrame:
    """Last emission per window, as an upserting sink would keep it (revision dropped)."""
    frames = [o.rows for o in outputs if o.rows.height]
    merged = pl.concat(frames).with_row_index("_order")
    last = merged.sort("_order").group_by(MERGE_KEY).last()
    return last.drop("_order", "revision").sort(MERGE_KEY)


# -- exact aggregates ---------------------------------------------------------------------


def test_tumbling_aggregates_are_exact() -> None:
    op = make_op(delay=0)
    temps = [20.0, 21.5, 19.0, 25.0, None, 22.25]
    out = op.update(
        rows("a", [0, 1, 2.5, 7, 8, 9.999], temp=temps).vstack(rows("a", [10], temp=[30.0]))
    )
    got = out.rows
    assert got.height == 1
    assert got["count"].dtype == pl.Int64
    assert got["revision"].dtype == pl.Int32
    assert got["window_start"].dtype == pl.Datetime("us", "UTC")
    assert got.row(0, named=True)["window"] == "tumbling_10s"
    assert secs(got["window_start"]) == [0.0]
    assert secs(got["window_end"]) == [10.0]
    values = np.array([v for v in temps if v is not None])
    row = got.row(0, named=True)
    assert row["count"] == 5
    assert row["revision"] == 0
    assert row["mean"] == pytest.approx(values.mean())
    assert (row["min"], row["max"]) == (19.0, 25.0)
    assert row["std"] == pytest.approx(np.std(values, ddof=1))
    for name, q in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)]:
        assert row[name] == pytest.approx(np.quantile(values, q))  # linear interpolation
    assert row["p50"] == 21.5
    assert row["p95"] == pytest.approx(24.45)
    assert row["mean"] == pytest.approx(21.55)


def test_single_value_window_has_null_std_and_count_skips_nulls() -> None:
    op = make_op(aggs=["count", "mean", "std"], metrics=["temp", "hum"])
    out = op.update(rows("a", [1, 2, 15], temp=[5.0, None, 1.0], hum=[None, None, 1.0])).rows
    assert out.select("metric", "count", "mean", "std").rows() == [
        ("hum", 0, None, None),
        ("temp", 1, 5.0, None),
    ]


def test_output_is_sorted_and_windows_wait_for_the_watermark() -> None:
    op = make_op(delay=5, aggs=["count"], metrics=["temp", "hum"])
    first = op.update(rows(["b", "a", "b"], [1, 2, 12], temp=[1.0, 2.0, 3.0], hum=[1.0, 1.0, 1.0]))
    assert first.rows.height == 0  # watermark 7 < window end 10
    assert op.watermark == at(7)
    out = op.update(rows("a", [15], temp=[0.0], hum=[0.0])).rows
    assert out.select("device", "metric", "count").rows() == [
        ("a", "hum", 1),
        ("a", "temp", 1),
        ("b", "hum", 1),
        ("b", "temp", 1),
    ]


def test_advance_emits_idle_windows() -> None:
    op = make_op(aggs=["count"], delay=2)
    assert op.update(rows("a", [3, 4], temp=[1.0, 2.0])).rows.height == 0
    assert op.advance(at(9)).rows.height == 0
    out = op.advance(at(10)).rows
    assert out["count"].to_list() == [2]
    assert op.watermark == at(10)
    assert op.advance(at(5)).rows.height == 0
    assert op.watermark == at(10)


def test_sliding_row_belongs_to_size_over_slide_windows() -> None:
    op = make_op("sliding", size=60, slide=10, aggs=["count", "min", "max"])
    seconds = [0, 5, 9.5, 10, 33, 59.9, 60, 61, 118]
    first = op.update(rows("a", seconds, temp=[float(s) for s in seconds])).rows
    out = pl.concat([first, op.advance(at(1000)).rows])
    assert first.height == 11  # watermark 118: windows ending at 10, 20 ... 110
    assert out["count"].sum() == 6 * len(seconds)  # every row in exactly 60/10 windows
    for window in out.iter_rows(named=True):
        start = (window["window_start"] - T0).total_seconds()
        inside = [s for s in seconds if start <= s < start + 60]
        assert window["count"] == len(inside)
        assert (window["min"], window["max"]) == (min(inside), max(inside))
    assert secs(out["window_start"])[0] == -50.0
    assert secs(out["window_end"])[-1] == 170.0


def test_devices_are_independent() -> None:
    op = make_op(aggs=["count", "mean"])
    out = op.update(
        rows(
            ["a", "b", "a", "c", "b", "a"],
            [1, 2, 3, 4, 11, 12],
            temp=[1.0, 10.0, 3.0, 7.0, 0.0, 0.0],
        )
    ).rows
    assert out.select("device", "count", "mean").rows() == [
        ("a", 2, 2.0),
        ("b", 1, 10.0),
        ("c", 1, 7.0),
    ]


def test_out_of_order_input_gives_the_sorted_result() -> None:
    rng = np.random.default_rng(7)
    seconds = np.round(np.sort(rng.uniform(0, 120, 400)), 3)
    devices = rng.choice(["a", "b", "c"], 400)
    temps = rng.normal(20, 3, 400)
    frame = rows(list(devices), list(seconds), temp=list(temps))

    def run(batches: list[pl.DataFrame]) -> pl.DataFrame:
        op = make_op("sliding", size=20, slide=5, delay=4)
        outs = [op.update(b) for b in batches]
        outs.append(op.advance(at(500)))
        assert sum(o.late_dropped + o.late_updated for o in outs) == 0
        return final(outs)

    expected = run([frame[i : i + 40] for i in range(0, 400, 40)])
    shuffled_in_batch = run(
        [frame[i : i + 40].sample(fraction=1.0, shuffle=True, seed=i) for i in range(0, 400, 40)]
    )
    # across batches: each row moved by less than the 4 s delay
    jitter = (
        frame.with_columns(
            (pl.col("ts") + pl.duration(milliseconds=pl.Series(rng.integers(0, 3900, 400)))).alias(
                "_arrive"
            )
        )
        .sort("_arrive")
        .drop("_arrive")
    )
    across = run([jitter[i : i + 40] for i in range(0, 400, 40)])
    assert_frame_equal(shuffled_in_batch, expected)
    assert_frame_equal(across, expected)


# -- lateness -----------------------------------------------------------------------------


def test_late_rows_update_the_emitted_window_with_a_new_revision() -> None:
    op = make_op(aggs=["count", "mean"], lateness=30, policy="update")
    assert op.update(rows("a", [1, 2, 15], temp=[1.0, 3.0, 0.0])).rows["revision"].to_list() == [0]
    late = op.update(rows("a", [4, 5], temp=[5.0, 7.0]))
    assert (late.late_updated, late.late_dropped) == (2, 0)
    assert late.rows.select("count", "mean", "revision").rows() == [(4, 4.0, 1)]
    again = op.update(rows("a", [6], temp=[9.0]))
    assert again.rows.select("count", "revision").rows() == [(5, 2)]


def test_drop_policy_counts_late_rows_and_keeps_the_window() -> None:
    op = make_op(aggs=["count", "mean"], lateness=30, policy="drop")
    op.update(rows("a", [1, 2, 15], temp=[1.0, 3.0, 0.0]))
    late = op.update(rows("a", [4, 5, 16], temp=[5.0, 7.0, 2.0]))
    assert (late.late_dropped, late.late_updated, late.rows.height) == (2, 0, 0)
    out = op.advance(at(20)).rows
    assert out.select("window_start", "count", "mean", "revision").rows() == [(at(10), 2, 1.0, 0)]


@pytest.mark.parametrize("policy", ["update", "drop"])
def test_rows_beyond_allowed_lateness_are_always_dropped(policy: str) -> None:
    op = make_op(aggs=["count"], lateness=10, policy=policy)
    op.update(rows("a", [1, 25], temp=[1.0, 1.0]))  # watermark 25: window [0, 10) + 10 is final
    late = op.update(rows("a", [2, 9.9, 12], temp=[1.0, 1.0, 1.0]))
    assert late.late_dropped == 2 + (1 if policy == "drop" else 0)
    assert late.late_updated == (1 if policy == "update" else 0)
    assert late.rows.select("window_start", "count", "revision").rows() == (
        [(at(10), 1, 0)] if policy == "update" else []
    )


def test_sliding_late_row_still_counts_in_its_open_windows() -> None:
    op = make_op("sliding", size=20, slide=10, aggs=["count"], lateness=0, policy="drop")
    op.update(rows("a", [1, 25], temp=[1.0, 1.0]))  # watermark 25: [0, 20) emitted and final
    late = op.update(rows("a", [12], temp=[1.0]))  # in [0, 20) (refused) and [10, 30) (open)
    assert late.late_dropped == 1
    out = op.advance(at(100)).rows
    assert out.select("window_start", "count").rows() == [(at(10), 2), (at(20), 1)]


# -- sessions -----------------------------------------------------------------------------


def test_sessions_split_on_gaps_per_device() -> None:
    op = make_op("session", size=None, gap=5, aggs=["count", "mean"])
    devices = ["a", "a", "a", "b", "a", "a"]
    out = op.update(rows(devices, [0, 3, 7.9, 1, 13, 14], temp=[1, 2, 3, 4, 5, 6])).rows
    assert out.select("device", "window_start", "window_end", "count", "mean").rows() == [
        ("a", at(0), at(12.9), 3, 2.0),  # 7.9 + 5 <= watermark 14
        ("b", at(1), at(6), 1, 4.0),
    ]
    assert out["window"][0] == "session_5s"
    assert op.advance(at(18.9)).rows.height == 0  # closes when watermark >= 14 + 5
    out = op.advance(at(19)).rows
    assert out.select("device", "window_start", "window_end", "count", "mean").rows() == [
        ("a", at(13), at(19), 2, 5.5)
    ]


def test_late_row_bridging_two_sessions_merges_them() -> None:
    op = make_op("session", size=None, gap=5, lateness=30, aggs=["count", "max"])
    first = op.update(rows("a", [0, 2, 10, 11, 30], temp=[1, 2, 3, 4, 9]))
    assert first.rows.select("window_start", "window_end", "count", "revision").rows() == [
        (at(0), at(7), 2, 0),
        (at(10), at(16), 2, 0),
    ]
    bridge = op.update(rows("a", [6], temp=[8]))
    assert (bridge.late_updated, bridge.late_dropped) == (1, 0)
    assert bridge.rows.select("window_start", "window_end", "count", "max", "revision").rows() == [
        (at(0), at(16), 5, 8.0, 1)
    ]


def test_session_rows_of_final_sessions_are_dropped() -> None:
    op = make_op("session", size=None, gap=5, lateness=5, aggs=["count"])
    op.update(rows("a", [0, 2, 30], temp=[1, 1, 1]))  # session [0, 7) is final at watermark 30
    late = op.update(rows("a", [6, 19, 24], temp=[1, 1, 1]))
    # 6 would extend the final session; 19 alone is [19, 24): final too; 24 is late, in time
    assert (late.late_dropped, late.late_updated) == (2, 1)
    assert late.rows.select("window_start", "window_end", "revision").rows() == [
        (at(24), at(29), 0)
    ]


def test_session_drop_policy_leaves_emitted_sessions_alone() -> None:
    op = make_op("session", size=None, gap=5, lateness=60, policy="drop", aggs=["count"])
    op.update(rows("a", [0, 2, 30], temp=[1, 1, 1]))
    late = op.update(rows("a", [5, 31], temp=[1, 1]))
    assert (late.late_dropped, late.late_updated, late.rows.height) == (1, 0, 0)
    out = op.advance(at(100)).rows
    assert out.select("window_start", "count").rows() == [(at(30), 2)]


def test_sessions_are_cut_at_the_maximum_session_length() -> None:
    op = make_op("session", size=60, gap=5, aggs=["count"])
    first = op.update(rows("a", [float(s) for s in range(50, 70)], temp=[1.0] * 20)).rows
    out = pl.concat([first, op.advance(at(200)).rows])
    assert out.select("window_start", "window_end", "count").rows() == [
        (at(50), at(64), 10),
        (at(60), at(74), 10),
    ]
    assert op.horizon == 60 + 5 + 30 + 0


# -- random streams: brute-force reference and restore ------------------------------------


def random_batches(seed: int, *, devices: int = 4, per_device: int = 250) -> list[pl.DataFrame]:
    """Readings with pauses, jittered arrival, 8 % arriving 3–80 s late, 10 % null humidity."""
    rng = np.random.default_rng(seed)
    keys, times = [], []
    for d in range(devices):
        steps = rng.exponential(1.0, per_device) + (rng.random(per_device) < 0.06) * rng.uniform(
            5, 40, per_device
        )
        keys += [f"d{d}"] * per_device
        times.append(np.cumsum(steps))
    event = np.round(np.concatenate(times), 3)
    n = len(event)
    arrival = event + rng.exponential(0.7, n) + (rng.random(n) < 0.08) * rng.uniform(3, 80, n)
    hum = rng.uniform(30, 60, n)
    frame = (
        pl.DataFrame(
            {
                "device": keys,
                "ts": [T0_US + round(e * 1e6) for e in event],
                "temp": rng.normal(20, 4, n),
                "hum": np.where(rng.random(n) < 0.1, np.nan, hum),
                "_arrival": arrival,
            }
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.col("hum").fill_nan(None))
        .sort("_arrival")
        .drop("_arrival")
    )
    cuts = np.cumsum(rng.integers(10, 60, n))
    bounds = [0, *[int(c) for c in cuts if c < n], n]
    return [frame[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def reference_fixed(
    batches: Sequence[pl.DataFrame],
    size: int,
    slide: int,
    delay: float,
    lateness: float,
    policy: str,
) -> pl.DataFrame:
    """Rows assigned to windows in plain Python, judged by the watermark before each batch."""
    wm: float | None = None
    picked: list[dict[str, object]] = []
    for batch in batches:
        for row in batch.iter_rows(named=True):
            t = (row["ts"] - T0).total_seconds()
            start = (t // slide) * slide
            while start + size > t:
                end = start + size
                if wm is None or end > (wm - lateness if policy == "update" else wm):
                    picked.append({**row, "window_start": at(start)})
                start -= slide
        newest = max((r - T0).total_seconds() for r in batch["ts"])
        wm = newest - delay if wm is None else max(wm, newest - delay)
    frame = pl.DataFrame(picked).unpivot(
        index=["device", "window_start"], on=["temp", "hum"], variable_name="metric"
    )
    v = pl.col("value")
    return (
        frame.group_by(["device", "window_start", "metric"])
        .agg(
            v.count().cast(pl.Int64).alias("count"),
            v.mean().alias("mean"),
            v.min().alias("min"),
            v.max().alias("max"),
            v.std().alias("std"),
            v.quantile(0.5, "linear").alias("p50"),
            v.quantile(0.95, "linear").alias("p95"),
        )
        .sort(["device", "window_start", "metric"])
    )


def run_all(op: WindowOperator, batches: Sequence[pl.DataFrame]) -> list[WindowOutput]:
    outs = [op.update(b) for b in batches]
    outs.append(op.advance(at(10**6)))
    return outs


@pytest.mark.parametrize(
    ("kind", "size", "slide", "policy"),
    [
        ("tumbling", 10, None, "update"),
        ("tumbling", 10, None, "drop"),
        ("sliding", 30, 10, "update"),
        ("sliding", 30, 10, "drop"),
    ],
)
def test_random_stream_matches_brute_force_reference(
    kind: str, size: int, slide: int | None, policy: str
) -> None:
    batches = random_batches(11)
    op = make_op(
        kind,
        size=size,
        slide=slide,
        delay=2,
        lateness=20,
        policy=policy,
        aggs=["count", "mean", "min", "max", "std", "p50", "p95"],
        metrics=["temp", "hum"],
    )
    outs = run_all(op, batches)
    got = final(outs).drop("window", "window_end")
    expected = reference_fixed(batches, size, slide or size, 2, 20, policy)
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9)
    assert sum(o.late_dropped for o in outs) > 0
    if policy == "update":
        assert sum(o.late_updated for o in outs) > 0
        assert max(o.rows["revision"].max() or 0 for o in outs) >= 1


@pytest.mark.parametrize(("kind", "size", "slide"), [("tumbling", 10, None), ("sliding", 30, 10)])
def test_small_batches_emit_each_window_once_and_buffer_only_open_windows(
    kind: str, size: int, slide: int | None
) -> None:
    # 0.1 s apart, 5 per batch: most batches move the watermark past no window end
    op = make_op(kind, size=size, slide=slide, delay=1, lateness=5, aggs=["count"])
    emitted: list[pl.DataFrame] = []
    for first in range(0, 2000, 5):
        out = op.update(rows("d", [i / 10 for i in range(first, first + 5)], temp=[1.0] * 5))
        if out.rows.height:
            emitted.append(out.rows)
    windows = pl.concat(emitted).filter(pl.col("window_start") >= T0)
    assert windows["revision"].to_list() == [0] * windows.height
    assert windows["window_start"].is_unique().all()
    ends = secs(windows["window_end"])
    assert ends[-1] == 190  # the watermark is at 198.9 s
    assert set(windows["count"].to_list()) == {size * 10}
    # rows whose windows are all final (end + lateness <= watermark) are gone
    assert op._rows is not None
    kept = op._rows.select(pl.from_epoch("_t", "us").dt.replace_time_zone("UTC"))["_t"]
    assert min(secs(kept)) >= 198.9 - 5 - size


def python_sessions(frame: pl.DataFrame, gap: float, cap: float) -> pl.DataFrame:
    out = []
    for (device,), group in frame.sort("ts").group_by(["device"]):
        current: list[float] = []
        for ts in group["ts"]:
            t = (ts - T0).total_seconds()
            if current and (t - current[-1] >= gap or t // cap != current[-1] // cap):
                out.append((device, at(current[0]), at(current[-1] + gap), len(current)))
                current = []
            current.append(t)
        out.append((device, at(current[0]), at(current[-1] + gap), len(current)))
    return pl.DataFrame(
        out, schema=["device", "window_start", "window_end", "count"], orient="row"
    ).sort(["device", "window_start"])


def test_random_sessions_match_plain_sessionization_when_nothing_is_dropped() -> None:
    batches = random_batches(5)
    op = make_op(
        "session", size=120, gap=4, delay=1, lateness=10_000, aggs=["count"], metrics=["temp"]
    )
    outs = run_all(op, batches)
    assert sum(o.late_updated for o in outs) > 0
    assert sum(o.late_dropped for o in outs) == 0
    emitted = final(outs).select("device", "window_start", "window_end", "count")
    # a session a late row extended backwards was re-emitted under its new start; the row under
    # the old start is superseded: its span lies inside the newer session's span
    inside = emitted.join(emitted, on="device", suffix="_by").filter(
        (pl.col("window_start_by") <= pl.col("window_start"))
        & (pl.col("window_end_by") >= pl.col("window_end"))
        & (pl.col("window_start_by") != pl.col("window_start"))
    )
    superseded = inside.select("device", "window_start").unique()
    assert 0 < superseded.height < 10
    got = emitted.join(superseded, on=["device", "window_start"], how="anti")
    expected = python_sessions(pl.concat(batches), gap=4, cap=120).with_columns(
        pl.col("count").cast(pl.Int64)
    )
    assert_frame_equal(
        got,
        expected.with_columns(pl.col("window_start", "window_end").cast(pl.Datetime("us", "UTC"))),
    )


@pytest.mark.parametrize(
    ("kind", "size", "slide", "gap", "policy"),
    [
        ("tumbling", 10, None, None, "update"),
        ("tumbling", 10, None, None, "drop"),
        ("sliding", 30, 10, None, "update"),
        ("sliding", 30, 10, None, "drop"),
        ("session", 120, None, 4, "update"),
        ("session", 120, None, 4, "drop"),
    ],
)
def test_restore_after_a_crash_gives_the_uninterrupted_result(
    kind: str, size: int, slide: int | None, gap: int | None, policy: str
) -> None:
    batches = random_batches(23, devices=3, per_device=200)

    def fresh() -> WindowOperator:
        return make_op(
            kind,
            size=size,
            slide=slide,
            gap=gap,
            delay=2,
            lateness=15,
            policy=policy,
            aggs=["count", "mean", "max", "p50"],
            metrics=["temp", "hum"],
        )

    op = fresh()
    clean = [op.update(b) for b in batches]
    clean.append(op.advance(at(10**6)))
    expected = final(clean)
    for cut in (1, len(batches) // 4, len(batches) // 2, len(batches) - 2):
        before = fresh()
        outs = [before.update(b) for b in batches[:cut]]
        watermark = before.watermark
        assert watermark is not None
        stored = pl.concat(batches[:cut])
        keep = stored.filter(pl.col("ts") >= watermark - timedelta(seconds=before.horizon))
        after = fresh()
        after.restore(keep.sample(fraction=1.0, shuffle=True, seed=cut), watermark)
        assert after.watermark == watermark
        resumed = [after.update(b) for b in batches[cut:]]
        resumed.append(after.advance(at(10**6)))
        # the same emissions as the run that never crashed, batch by batch (revisions aside)
        for got, want in zip(resumed, clean[cut:], strict=True):
            assert_frame_equal(
                got.rows.drop("revision"),
                want.rows.drop("revision"),
                check_exact=False,
                rel_tol=1e-12,
            )
            assert (got.late_dropped, got.late_updated) == (want.late_dropped, want.late_updated)
        assert_frame_equal(final(outs + resumed), expected, check_exact=False, rel_tol=1e-12)


def test_restore_without_a_watermark_starts_from_the_rows() -> None:
    op = make_op(aggs=["count"])
    op.restore(rows("a", [1, 2], temp=[1.0, 1.0]), None)
    assert op.watermark is None
    assert op.update(rows("a", [12], temp=[1.0])).rows["count"].to_list() == [2]


def test_bad_columns_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        WindowOperator(
            WindowConfig(size=10), WatermarkConfig(), key="device", time="ts", metrics=["ts"]
        )
    op = make_op()
    with pytest.raises(ConfigError, match="key / time"):
        op.update(pl.DataFrame({"device": ["a"], "temp": [1.0]}))
