"""Online detectors: exact against brute-force references, batch-split invariant, and good
enough on a synthetic sensor fleet to beat a fixed-threshold baseline."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import polars as pl
import pytest

from loopline.config.streams import DetectorConfig
from loopline.errors import ConfigError, MissingDependencyError
from loopline.stream import detectors as detectors_module
from loopline.stream.detectors import (
    MAD_TO_SIGMA,
    MEAN_AD_TO_SIGMA,
    SCALE_FLOOR,
    Detector,
    EwmaDetector,
    FixedDetector,
    HalfSpaceTreesDetector,
    ZScoreDetector,
    build_detectors,
)

KINDS = ["zscore", "ewma", "hst", "fixed"]


def one(kind: str, **options: Any) -> Detector:
    options = {"low": 18.0, "high": 22.0} | options if kind == "fixed" else options
    [detector] = build_detectors([DetectorConfig(kind=kind, **options)], ["m"])  # type: ignore[arg-type]
    return detector


def noisy_stream(n: int = 1500, devices: int = 6, seed: int = 3) -> tuple[pl.Series, pl.Series]:
    """Interleaved devices; quantised values (so MAD is often 0), nulls, NaN and spikes."""
    rng = np.random.default_rng(seed)
    device = rng.choice([f"d{i}" for i in range(devices)], n)
    values = np.round(rng.normal(20, 1, n) * 2) / 2
    values[rng.random(n) < 0.03] += 15
    mostly_flat = device == "d0"  # MAD is 0 there: the mean absolute deviation takes over
    values[mostly_flat] = 20.0 + 0.5 * (rng.random(mostly_flat.sum()) < 0.2)
    values[rng.random(n) < 0.02] = np.nan
    listed: list[float | None] = [None if i % 53 == 0 else v for i, v in enumerate(values)]
    return pl.Series("device", device), pl.Series("m", listed, dtype=pl.Float64)


def as_floats(values: pl.Series) -> list[float]:
    return [math.nan if v is None else v for v in values.to_list()]


def reference_zscore(devices: pl.Series, values: pl.Series, window: int) -> np.ndarray[Any, Any]:
    """Row by row: |x − median| / scale over the device's previous ``window`` valid values."""
    history: dict[str, list[float]] = {}
    out = []
    for device, x in zip(devices.to_list(), as_floats(values), strict=True):
        past = history.setdefault(device, [])[-window:]
        if math.isnan(x) or not past:
            out.append(math.nan)
        else:
            med = float(np.median(past))
            dev = np.abs(np.array(past) - med)
            scale = MAD_TO_SIGMA * float(np.median(dev)) or MEAN_AD_TO_SIGMA * float(dev.mean())
            out.append(abs(x - med) / max(scale, SCALE_FLOOR * max(abs(med), 1.0)))
        if not math.isnan(x):
            history[device].append(x)
    return np.array(out)


def reference_ewma(devices: pl.Series, values: pl.Series, alpha: float) -> np.ndarray[Any, Any]:
    """Row by row: d = x − mean; z = |d| / √var; mean += α·d; var += α·((1 − α)·d² − var)."""
    state: dict[str, tuple[float, float]] = {}
    out = []
    for device, x in zip(devices.to_list(), as_floats(values), strict=True):
        if math.isnan(x):
            out.append(math.nan)
            continue
        if device not in state:
            out.append(math.nan)
            state[device] = (x, 0.0)
            continue
        mean, var = state[device]
        d = x - mean
        out.append(abs(d) / max(math.sqrt(var), SCALE_FLOOR * max(abs(mean), 1.0)))
        state[device] = (mean + alpha * d, var + alpha * ((1 - alpha) * d * d - var))
    return np.array(out)


def test_zscore_matches_the_brute_force_reference() -> None:
    devices, values = noisy_stream()
    scores, _ = one("zscore", window=16).score_many(devices, values)
    expected = reference_zscore(devices, values, 16)
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(expected))
    np.testing.assert_allclose(scores, expected, rtol=1e-12, equal_nan=True)


def test_ewma_matches_the_python_reference_exactly() -> None:
    devices, values = noisy_stream()
    scores, _ = one("ewma", alpha=0.1).score_many(devices, values)
    np.testing.assert_array_equal(scores, reference_ewma(devices, values, 0.1))


def test_ewma_of_many_short_device_runs_matches_the_reference_exactly() -> None:
    # 300 devices: a few readings each, the NumPy stepping path (long runs use Polars)
    devices, values = noisy_stream(n=1500, devices=300)
    scores, _ = one("ewma", alpha=0.1).score_many(devices, values)
    np.testing.assert_array_equal(scores, reference_ewma(devices, values, 0.1))


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.123, 0.3, 0.9])
def test_ewm_steps_round_exactly_like_polars(alpha: float, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 30, 40)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    values = rng.normal(20.0, 5.0, lengths.sum()) * 1e3
    stepped = detectors_module._ewm(values, starts, lengths, alpha)
    monkeypatch.setattr(detectors_module, "_EWM_STEPS", 0)  # every run through Polars
    np.testing.assert_array_equal(stepped, detectors_module._ewm(values, starts, lengths, alpha))


def test_detectors_built_together_share_the_device_grouping_and_score_alike() -> None:
    devices, values = noisy_stream(n=800, devices=12)
    other = pl.Series("m2", [None if i % 7 == 0 else (i % 50) / 3 for i in range(800)])
    columns = {"m": values, "m2": other}
    configs = [DetectorConfig(kind="zscore", window=16), DetectorConfig(kind="ewma")]
    shared = build_detectors(configs, ["m", "m2"])
    assert len({id(d.grouping) for d in shared}) == 1  # type: ignore[attr-defined]
    alone = {  # each on its own: a grouping of its own, never reused
        (d.name, d.metric): build_detectors([c for c in configs if c.kind == d.name], [d.metric])[0]
        for d in shared
    }
    for start in range(0, 800, 100):
        batch = devices[start : start + 100]  # one Series per batch, as the processor passes
        for detector in shared:
            part = columns[detector.metric][start : start + 100]
            got = detector.score_many(batch, part)
            expected = alone[detector.name, detector.metric].score_many(batch.clone(), part)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("kind", KINDS)
def test_scores_do_not_depend_on_how_the_stream_is_cut(kind: str) -> None:
    devices, values = noisy_stream(n=1200 if kind == "hst" else 1500)
    options = {"window": 16, "warmup": 5}
    whole = one(kind, **options).score_many(devices, values)
    cut = one(kind, **options)
    rng = np.random.default_rng(11)
    bounds = [0, 1, 2, 3, *sorted(rng.choice(np.arange(4, len(values)), 25, replace=False))]
    parts = [
        cut.score_many(devices[a:b], values[a:b])
        for a, b in zip(bounds, [*bounds[1:], len(values)], strict=True)
    ]
    np.testing.assert_array_equal(whole[0], np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(whole[1], np.concatenate([p[1] for p in parts]))
    assert whole[1].any()


@pytest.mark.parametrize("kind", KINDS)
def test_score_many_equals_score_one_then_learn_one(kind: str) -> None:
    devices, values = noisy_stream(n=600)
    batch, _ = one(kind, window=16).score_many(devices, values)
    single = one(kind, window=16)
    scores = []
    for device, x in zip(devices.to_list(), as_floats(values), strict=True):
        scores.append(single.score_one(device, x))
        single.learn_one(device, x)
    np.testing.assert_allclose(batch, scores, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
def test_nulls_score_nan_never_flag_and_are_not_learned(kind: str) -> None:
    rng = np.random.default_rng(5)
    clean = rng.normal(20, 1, 200)
    clean[150] = 60.0
    with_gaps: list[float | None] = []
    for i, x in enumerate(clean):
        with_gaps += [x, None] if i % 3 else [x, math.nan]
    devices = pl.Series(["d"] * len(with_gaps))
    scores, flags = one(kind, window=16).score_many(devices, pl.Series(with_gaps))
    plain_scores, plain_flags = one(kind, window=16).score_many(devices[:200], pl.Series(clean))
    assert np.isnan(scores[1::2]).all()
    assert not flags[1::2].any()
    np.testing.assert_array_equal(scores[::2], plain_scores)
    np.testing.assert_array_equal(flags[::2], plain_flags)
    assert plain_flags[150]


@pytest.mark.parametrize("kind", ["zscore", "ewma", "fixed"])
def test_the_first_warmup_readings_of_each_device_never_flag(kind: str) -> None:
    values = pl.Series([20.0, None, 20.5, 90.0, 20.1, 19.9, 20.2, 200.0] * 2)
    devices = pl.Series(["a"] * 8 + ["b"] * 8)
    scores, flags = one(kind, warmup=4, window=8).score_many(devices, values)
    # Readings 0-3 of each device (the null does not count) are scored, never flagged.
    assert not flags[[0, 2, 3, 4, 8, 10, 11, 12]].any()
    assert np.isfinite(scores[[2, 3, 4, 10, 11, 12]]).all()
    assert flags[[7, 15]].all()


@pytest.mark.parametrize("kind", ["zscore", "ewma"])
def test_a_stuck_sensor_scores_zero_and_any_clear_change_flags(kind: str) -> None:
    values = pl.Series([21.5] * 60 + [21.5, 21.6, 21.5, 25.0])
    scores, flags = one(kind, window=16, warmup=10).score_many(pl.Series(["d"] * 64), values)
    assert np.isfinite(scores[1:]).all()
    assert scores[60] == 0.0
    assert not flags[60]
    assert flags[61]
    assert flags[63]


def test_zscore_falls_back_to_the_mean_absolute_deviation_when_mad_is_zero() -> None:
    history = [20.0] * 12 + [21.0] * 4  # MAD 0; mean absolute deviation 0.25
    z = one("zscore", window=16)
    for x in history:
        z.learn_one("d", x)
    assert z.score_one("d", 20.5) == pytest.approx(0.5 / (MEAN_AD_TO_SIGMA * 0.25))


def test_fixed_flags_outside_the_bounds_and_scores_the_distance() -> None:
    det = one("fixed", low=None, high=30.0, warmup=0)
    scores, flags = det.score_many(pl.Series(["d"] * 4), pl.Series([-100.0, 30.0, 30.5, None]))
    np.testing.assert_array_equal(scores[:3], [0.0, 0.0, 0.5])
    assert flags.tolist() == [False, False, True, False]


def test_hst_flags_spikes_and_one_huge_outlier_does_not_blind_it() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(20, 0.5, 800)
    values[[150, 400, 650]] = [80.0, 23.0, 17.0]  # 120 σ, then two ±6 σ spikes
    det = one("hst", window=50, warmup=0)
    scores, flags = det.score_many(pl.Series(["d"] * 800), pl.Series(values))
    assert (scores[:50] == 0).all()  # the first window builds the reference mass
    assert not flags[:50].any()
    # A min-max scaler would stretch to 80 °C and squash the later ±6 σ spikes into the
    # normal readings' corner; the deviation from the device's own EWMA does not.
    assert flags[[150, 400, 650]].all()
    assert flags[50:].sum() <= 3 + 0.01 * 750, np.flatnonzero(flags)
    assert scores[[400, 650]].min() > np.quantile(scores[50:], 0.99)


def test_hst_default_threshold_follows_the_height() -> None:
    assert one("hst").threshold == pytest.approx(0.95)  # type: ignore[attr-defined]
    assert one("hst", height=4).threshold == pytest.approx(0.8)  # type: ignore[attr-defined]
    assert one("hst", height=8).threshold == pytest.approx(0.9875)  # type: ignore[attr-defined]
    assert one("hst", height=8, threshold=0.5).threshold == 0.5  # type: ignore[attr-defined]


def test_hst_never_flags_before_its_reference_window_or_warmup() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(20, 0.5, 120)
    values[[5, 12, 40, 100]] = 60.0
    devices = pl.Series(["d"] * 120)
    scores, flags = one("hst", window=10, warmup=50).score_many(devices, pl.Series(values))
    assert (scores[:10] == 0).all()  # no reference window yet
    assert min(scores[12], scores[40]) > 0.95  # scored after the first window ...
    assert not flags[:50].any()  # ... but not flagged during the warmup
    assert flags[100]


def test_hst_scores_of_a_device_do_not_depend_on_the_other_devices() -> None:
    devices, values = noisy_stream(n=900)
    together, _ = one("hst", window=16).score_many(devices, values)
    mine = (devices == "d3").to_numpy()
    alone, _ = one("hst", window=16).score_many(devices.filter(mine), values.filter(mine))
    np.testing.assert_array_equal(together[mine], alone)
    other = (devices == "d4").to_numpy()
    assert not np.array_equal(together[mine][:100], together[other][:100])


def test_hst_without_river_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "river", None)
    with pytest.raises(MissingDependencyError, match=r"loopline\[stream\]"):
        one("hst").score_one("d", 1.0)


def test_build_detectors_expands_metrics_and_names_repeated_kinds() -> None:
    configs = [
        DetectorConfig(kind="zscore"),
        DetectorConfig(kind="ewma", metrics=["humidity"], threshold=3.0),
        DetectorConfig(kind="zscore", window=30),
        DetectorConfig(kind="hst"),
    ]
    detectors = build_detectors(configs, ["temperature", "humidity"])
    assert [(d.name, d.metric) for d in detectors] == [
        ("zscore_1", "temperature"), ("zscore_1", "humidity"), ("ewma", "humidity"),
        ("zscore_2", "temperature"), ("zscore_2", "humidity"),
        ("hst", "temperature"), ("hst", "humidity"),
    ]  # fmt: skip
    assert isinstance(detectors[0], ZScoreDetector)
    assert isinstance(detectors[2], EwmaDetector)
    assert isinstance(detectors[5], HalfSpaceTreesDetector)
    assert [detectors[i].threshold for i in (0, 2, 5)] == [4.0, 3.0, 0.95]  # type: ignore[attr-defined]
    fixed = build_detectors([DetectorConfig(kind="fixed", high=1)], ["t"])[0]
    assert isinstance(fixed, FixedDetector)


def test_build_detectors_rejects_a_metric_the_pipeline_does_not_have() -> None:
    with pytest.raises(ConfigError, match="temprature"):
        build_detectors([DetectorConfig(kind="zscore", metrics=["temprature"])], ["temperature"])


def sensor_fleet(
    devices: int = 20, steps: int = 3000, seed: int = 7, sigma: float = 0.3
) -> pl.DataFrame:
    """A daily cycle (4,320 readings: one every 20 s) + noise + slow drift per device, with
    ±6σ spikes, one lasting +/-8σ level shift (its first 60 readings labelled) and one
    40-reading stuck run per device; rows interleaved by time."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    series, kinds = [], []
    for _ in range(devices):
        cycle = 3.0 * np.sin(2 * np.pi * t / 4320 + rng.uniform(0, 2 * np.pi))
        v = 20 + rng.normal(0, 2) + cycle + rng.normal(0, 0.0005) * t + rng.normal(0, sigma, steps)
        kind = np.full(steps, "", dtype=object)
        shift = rng.integers(200, steps - 300)
        v[shift:] += rng.choice([-1, 1]) * 8 * sigma
        kind[shift : shift + 60] = "level_shift"
        stuck = rng.integers(200, steps - 100)
        v[stuck : stuck + 40] = v[stuck]
        kind[stuck : stuck + 40] = "stuck"
        spikes = np.flatnonzero((rng.random(steps) < 0.005) & (t >= 200) & (kind == ""))
        v[spikes] += rng.choice([-1, 1], spikes.size) * 6 * sigma
        kind[spikes] = "spike"
        series.append(v)
        kinds.append(kind)
    names = np.array([f"d{d:02d}" for d in range(devices)])
    return pl.DataFrame(
        {
            "device": np.tile(names, steps),
            "value": np.stack(series, 1).ravel(),
            "kind": np.stack(kinds, 1).ravel(),
        }
    )


def detection_quality(detector: Detector, fleet: pl.DataFrame) -> tuple[float, float]:
    """Recall on spikes and precision (share of flags on an injected anomaly), in
    1,000-row micro-batches."""
    flags = np.concatenate(
        [
            detector.score_many(batch["device"], batch["value"])[1]
            for batch in fleet.iter_slices(1000)
        ]
    )
    kind = fleet["kind"].to_numpy()
    spikes = kind == "spike"
    recall = (flags & spikes).sum() / spikes.sum()
    precision = (flags & (kind != "")).sum() / max(flags.sum(), 1)
    return float(recall), float(precision)


def test_zscore_and_ewma_find_spikes_better_than_fixed_thresholds() -> None:
    fleet = sensor_fleet()
    for kind in ("zscore", "ewma"):
        recall, precision = detection_quality(one(kind), fleet)
        assert recall >= 0.8, (kind, recall, precision)
        assert precision >= 0.5, (kind, recall, precision)
    # Fleet-wide bounds that are sensible for these sensors (20 °C ± 8)
    recall, precision = detection_quality(one("fixed", low=12.0, high=28.0, warmup=0), fleet)
    assert recall < 0.8 or precision < 0.5, (recall, precision)


def test_hst_finds_spikes_better_than_fixed_thresholds() -> None:
    # Measured (recall, precision): zscore (0.94, 0.87), ewma (0.93, 0.95), hst (0.87, 0.78),
    # fixed 12-28 °C (0.05, 0.07).
    recall, precision = detection_quality(one("hst"), sensor_fleet())
    assert recall >= 0.7, (recall, precision)
    assert precision >= 0.5, (recall, precision)
