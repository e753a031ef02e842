"""Event-time progress of a stream: the watermark, newest event time seen minus a delay.

The watermark says "no more events older than this are expected"; windows ending at or
before it are complete. It never moves back: an older batch leaves it where it is, and
``advance`` moves it forward while devices are idle (wall clock minus the delay, say).

>>> from datetime import datetime, timezone
>>> wm = WatermarkTracker(delay=5.0)
>>> wm.observe(datetime(2026, 1, 1, 12, 0, 10, tzinfo=timezone.utc))
datetime.datetime(2026, 1, 1, 12, 0, 5, tzinfo=datetime.timezone.utc)
>>> wm.observe(datetime(2026, 1, 1, 12, 0, 7, tzinfo=timezone.utc)).second  # never moves back
5
>>> wm.advance(datetime(2026, 1, 1, 12, 1, tzinfo=timezone.utc)).minute
1
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loopline.errors import ConfigError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch; a naive ``datetime`` is taken as UTC.

    >>> to_micros(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    1000000
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC ``datetime`` of ``micros`` microseconds since the Unix epoch.

    >>> from_micros(1_500_000).isoformat()
    '1970-01-01T00:00:01.500000+00:00'
    """
    return _EPOCH + timedelta(microseconds=micros)


class WatermarkTracker:
    """Watermark = newest event time seen − ``delay`` seconds; monotonic.

    Times are held as integer microseconds since the epoch (``value_us``), the unit of the
    ``Datetime("us", "UTC")`` columns the operators work on.
    """

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ConfigError(
                "The 'delay' parameter of WatermarkTracker must be >= 0.",
                hint="use a delay such as 5s",
                delay=delay,
            )
        self.delay = delay
        self._delay_us = round(delay * 1_000_000)
        self._value_us: int | None = None

    @property
    def value_us(self) -> int | None:
        """The watermark in microseconds since the epoch; ``None`` before the first event."""
        return self._value_us

    @property
    def value(self) -> datetime | None:
        """The watermark as a UTC ``datetime``; ``None`` before the first event."""
        return None if self._value_us is None else from_micros(self._value_us)

    def observe_us(self, newest_us: int) -> int:
        """Take the newest event time of a batch (microseconds); returns the watermark."""
        return self.advance_us(newest_us - self._delay_us)

    def advance_us(self, watermark_us: int) -> int:
        """Raise the watermark to ``watermark_us`` if that is later; returns the watermark."""
        if self._value_us is None or watermark_us > self._value_us:
            self._value_us = watermark_us
        return self._value_us

    def observe(self, newest: datetime) -> datetime:
        """Take the newest event time of a batch; returns the watermark."""
        return from_micros(self.observe_us(to_micros(newest)))

    def advance(self, watermark: datetime) -> datetime:
        """Move the watermark forward to ``watermark`` (idle sources); never back."""
        return from_micros(self.advance_us(to_micros(watermark)))

    def reset(self, watermark: datetime | None) -> None:
        """Set the watermark as committed before a restart (``None``: nothing seen yet)."""
        self._value_us = None if watermark is None else to_micros(watermark)
