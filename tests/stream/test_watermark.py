"""WatermarkTracker: newest event time − delay, monotonic, advanced when idle, reset on restore."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loopline.errors import ConfigError
from loopline.stream.watermark import WatermarkTracker, from_micros, to_micros

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_watermark_is_newest_event_minus_delay_and_never_moves_back() -> None:
    wm = WatermarkTracker(delay=5.0)
    assert wm.value is None
    assert wm.observe(T0 + timedelta(seconds=30)) == T0 + timedelta(seconds=25)
    assert wm.observe(T0) == T0 + timedelta(seconds=25)  # an older batch changes nothing
    assert wm.observe(T0 + timedelta(seconds=31.5)) == T0 + timedelta(seconds=26.5)
    assert wm.value_us == to_micros(T0) + 26_500_000


def test_advance_raises_the_watermark_only_forward() -> None:
    wm = WatermarkTracker(delay=2.0)
    assert wm.advance(T0) == T0  # idle before any event
    wm.observe(T0 + timedelta(seconds=10))
    assert wm.advance(T0) == T0 + timedelta(seconds=8)
    assert wm.advance(T0 + timedelta(minutes=1)) == T0 + timedelta(minutes=1)
    assert wm.observe(T0 + timedelta(seconds=20)) == T0 + timedelta(minutes=1)


def test_reset_restores_a_committed_watermark() -> None:
    wm = WatermarkTracker(delay=1.0)
    wm.observe(T0 + timedelta(hours=1))
    wm.reset(T0)
    assert wm.value == T0
    wm.reset(None)
    assert wm.value is None


def test_micros_round_trip_and_naive_is_utc() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert from_micros(to_micros(moment)) == moment
    assert to_micros(moment.replace(tzinfo=None)) == to_micros(moment)
    assert to_micros(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)) == -1_000_000


def test_negative_delay_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="delay"):
        WatermarkTracker(delay=-1.0)
