"""Simulated IoT devices: realistic sensor readings with known anomalies and known faults.

``loopline stream simulate`` and the stream tests use it to publish a reproducible stream
through any :class:`~loopline.stream.transport.Transport` and to know exactly what should
come out of the pipeline: the report counts every category of message published, and the
ground truth lists every reading an anomaly was injected into.

Each device reports every ``devices / rate`` seconds (readings of all devices are evenly
interleaved): temperature (°C: a daily sine cycle with a per-device base, amplitude and
phase, noise and a slow drift), humidity (%, anti-correlated with the temperature cycle,
clipped to 0–100), vibration (mm/s, lognormal around a per-device median) and battery (%,
slowly draining). Readings are generated per tick (``ticks_per_second``) with NumPy and
encoded in one Polars NDJSON write; the event time ``ts`` is ``start`` + the reading's
offset, so in real time it lags the publish by at most one tick (20 ms by default).

Injected, per reading with probability ``anomaly_rate`` (on temperature, humidity or
vibration): ``spike`` (one reading 6–10 σ off), ``stuck`` (the value frozen for
``anomaly_length`` readings), ``level_shift`` (4–8 σ added for ``anomaly_length``
readings). Faults, each on a disjoint set of readings (never one carrying an anomaly):
``malformed`` (truncated JSON, non-UTF-8 garbage, a missing device or a bad timestamp:
they replace the reading), ``late`` (held back and published ``late_by`` seconds after
their event time), ``out_of_order`` (held back 2 ticks to ``out_of_order_window``),
``duplicate`` (the same bytes and msg_id again within ``duplicate_delay``). Late and
out-of-order readings are only picked where they can be released within ``duration``, so
every one is published; for them to be late for windows, ``late_by`` must exceed the
pipeline's watermark delay.

A payload: ``{"msg_id": "d0007-000123", "device": "d0007", "site": "s4", "ts":
1714564800.25, "temperature": 21.37, "humidity": 48.2, "vibration": 1.234, "battery":
87.5}`` (``ts`` in epoch seconds). :meth:`Simulator.run` paces ticks on a monotonic clock
when ``realtime`` (a publish that blocks delays the stream, which then catches up);
otherwise it publishes as fast as the transport takes them.

>>> sim = Simulator(SimulatorConfig(devices=2, rate=100, duration=0.1, start=1.7e9, seed=1))
>>> batch = next(sim.batches())
>>> batch.topics[0], batch.payloads[0][:44]
('sensors/s1/d0000', b'{"msg_id":"d0000-000000","device":"d0000","s')
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np
import polars as pl

from loopline.errors import ConfigError, MissingDependencyError

logger = logging.getLogger(__name__)

METRICS = ("temperature", "humidity", "vibration")
"""The metrics anomalies are injected into (battery only drains)."""
ANOMALY_KINDS = ("spike", "stuck", "level_shift")
MALFORMED_KINDS = ("truncated", "garbage", "missing_device", "bad_ts")
TRUTH_SCHEMA: dict[str, pl.DataType] = {
    "msg_id": pl.String(),
    "device": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "metric": pl.String(),
    "kind": pl.String(),
    "episode": pl.Int64(),
}


def malformed_rule(kind: str, fmt: Literal["json", "msgpack"] = "json") -> str:
    """The rule :func:`~loopline.stream.decode.decode_batch` rejects a malformed kind by.

    >>> malformed_rule("truncated"), malformed_rule("bad_ts", "msgpack")
    ('decode:json', 'decode:time')
    """
    return {"missing_device": "decode:missing_field:device", "bad_ts": "decode:time"}.get(
        kind, f"decode:{fmt}"
    )


@dataclass
class SimulatorConfig:
    """What to simulate; validated when built. Fractions are of all readings."""

    devices: int = 100
    rate: float = 1000.0
    duration: float = 10.0
    sites: int = 4
    seed: int = 0
    topic: str = "sensors/{site}/{device}"
    fmt: Literal["json", "msgpack"] = "json"
    anomaly_rate: float = 0.002
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    anomaly_length: int = 20
    out_of_order_fraction: float = 0.0
    out_of_order_window: float = 1.0
    late_fraction: float = 0.0
    late_by: float = 10.0
    duplicate_fraction: float = 0.0
    duplicate_delay: float = 1.0
    malformed_fraction: float = 0.0
    start: float | datetime | None = None
    realtime: bool = True
    ticks_per_second: float = 50.0

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("devices", self.devices >= 1, "an integer >= 1"),
            ("rate", self.rate > 0, "> 0 (messages per second, all devices together)"),
            ("duration", 0 < self.duration < math.inf, "a finite number of seconds > 0"),
            ("sites", self.sites >= 1, "an integer >= 1"),
            ("anomaly_length", self.anomaly_length >= 1, "an integer >= 1"),
            ("ticks_per_second", 0 < self.ticks_per_second <= 1000, "in (0, 1000]"),
            ("late_by", self.late_by >= 0, ">= 0 seconds"),
            ("duplicate_delay", self.duplicate_delay >= 0, ">= 0 seconds"),
            ("fmt", self.fmt in ("json", "msgpack"), "'json' or 'msgpack'"),
            (
                "anomaly_kinds",
                bool(self.anomaly_kinds) and set(self.anomaly_kinds) <= set(ANOMALY_KINDS),
                f"a non-empty subset of {list(ANOMALY_KINDS)}",
            ),
        ]
        fractions = (
            "anomaly_rate",
            "out_of_order_fraction",
            "late_fraction",
            "duplicate_fraction",
            "malformed_fraction",
        )
        checks += [(f, 0 <= getattr(self, f) <= 1, "a fraction in [0, 1]") for f in fractions]
        faults = sum(getattr(self, f) for f in fractions[1:])
        checks.append(("*_fraction", faults <= 1, "fractions summing to at most 1"))
        for name, ok, want in checks:
            if not ok:
                got = faults if name == "*_fraction" else getattr(self, name)
                raise ConfigError(
                    f"The '{name}' parameter of SimulatorConfig must be {want}. Got {got!r}.",
                    path=f"simulator.{name}",
                )
        try:
            self.topic.format(site="s", device="d")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"bad topic template {self.topic!r}: {exc}",
                hint="use the fields {site} and {device}, e.g. sensors/{site}/{device}",
                path="simulator.topic",
            ) from exc


class Publisher(Protocol):
    """What :meth:`Simulator.run` needs of a transport (every Transport is one)."""

    def publish(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> None: ...

    def flush(self, timeout: float = 10.0) -> None: ...


class SimBatch(NamedTuple):
    """What one tick publishes, in order; ``at``: seconds after the start it is due.

    ``counts`` has ``valid``, ``duplicate``, ``late``, ``out_of_order`` and one entry per
    malformed kind; ``truth`` the anomalous readings among ``payloads``.
    """

    topics: list[str]
    payloads: list[bytes]
    truth: pl.DataFrame
    msg_ids: list[str]
    at: float
    counts: Counter[str]


@dataclass
class SimulationReport:
    """Exact counts of what was published.

    ``valid`` counts unique valid readings (each stored exactly once by a correct
    pipeline); ``total`` = ``valid`` + ``duplicates`` + ``malformed``; ``late`` and
    ``out_of_order`` are valid readings held back; ``anomalies`` counts injected episodes,
    ``truth`` has one row per reading they touched.
    """

    total: int = 0
    valid: int = 0
    duplicates: int = 0
    malformed: int = 0
    late: int = 0
    out_of_order: int = 0
    anomalies: int = 0
    malformed_by_kind: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    truth: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=TRUTH_SCHEMA))

    @property
    def total_unique_valid(self) -> int:
        return self.valid

    @property
    def rate(self) -> float:
        """Messages published per second of wall time."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    def expected_rejects(self, fmt: Literal["json", "msgpack"] = "json") -> dict[str, int]:
        """Rejects per decode rule the malformed messages must produce."""
        out: Counter[str] = Counter()
        for kind, n in self.malformed_by_kind.items():
            out[malformed_rule(kind, fmt)] += n
        return dict(out)


class Simulator:
    """Generate (:meth:`batches`) or publish (:meth:`run`) a simulated device stream."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config

    def run(
        self,
        transport: Publisher,
        *,
        truth_path: Path | None = None,
        stop: threading.Event | None = None,
    ) -> SimulationReport:
        """Publish through an opened ``transport`` (paced unless ``realtime`` is off), flush."""
        cfg = self.config
        report = SimulationReport()
        counts: Counter[str] = Counter()
        truths: list[pl.DataFrame] = []
        began = time.monotonic()
        for batch in self._batches(time.time() if cfg.start is None else cfg.start):
            if stop is not None and stop.is_set():
                break
            if cfg.realtime and (wait := began + batch.at - time.monotonic()) > 0:
                if stop is not None:
                    if stop.wait(wait):
                        break
                else:
                    time.sleep(wait)
            for topic, payload, msg_id in zip(
                batch.topics, batch.payloads, batch.msg_ids, strict=True
            ):
                transport.publish(topic, payload, msg_id=msg_id)
            counts.update(batch.counts)
            truths.append(batch.truth)
        transport.flush()
        report.elapsed = time.monotonic() - began
        report.truth = pl.concat(truths) if truths else report.truth
        report.valid, report.duplicates = counts["valid"], counts["duplicate"]
        report.late, report.out_of_order = counts["late"], counts["out_of_order"]
        report.malformed_by_kind = {k: counts[k] for k in MALFORMED_KINDS if counts[k]}
        report.malformed = sum(report.malformed_by_kind.values())
        report.total = report.valid + report.duplicates + report.malformed
        report.anomalies = report.truth["episode"].n_unique()
        if truth_path is not None:
            truth_path.parent.mkdir(parents=True, exist_ok=True)
            report.truth.write_parquet(truth_path)
        logger.info(
            "simulated %d messages in %.2fs (%d valid, %d duplicates, %d malformed, %d late)",
            report.total, report.elapsed, report.valid, report.duplicates, report.malformed,
            report.late,
        )  # fmt: skip
        return report

    def batches(self) -> Iterator[SimBatch]:
        """One :class:`SimBatch` per tick, in publish order, then one with the stragglers.

        Event times start at ``config.start``, or now when it is not set.
        """
        return self._batches(time.time() if self.config.start is None else self.config.start)

    def _batches(self, start: float | datetime) -> Iterator[SimBatch]:
        cfg = self.config
        if isinstance(start, datetime):
            start = start.timestamp()
        devices = _Devices(cfg, np.random.default_rng(cfg.seed), start)
        held: list[tuple[float, int, str, bytes, str, str]] = []
        total = round(cfg.rate * cfg.duration)
        ticks = math.ceil(cfg.duration * cfg.ticks_per_second)
        per_tick = cfg.rate / cfg.ticks_per_second
        bounds = [min(total, math.ceil(i * per_tick - 1e-9)) for i in range(ticks)] + [total]
        for tick in range(ticks):
            at = min(cfg.duration, (tick + 1) / cfg.ticks_per_second)
            out = devices.tick(bounds[tick], bounds[tick + 1])
            for item in out.held:
                heapq.heappush(held, item)
            due = []
            while held and held[0][0] <= at + 1e-9:
                due.append(heapq.heappop(held))
            yield _batch(out, due, at)
        if held:
            yield _batch(_Tick.empty(), sorted(held), cfg.duration)


def to_payloads(frame: pl.DataFrame, fmt: Literal["json", "msgpack"] = "json") -> list[bytes]:
    """Each row of ``frame`` as one payload, without a ``json.dumps`` per message.

    >>> to_payloads(pl.DataFrame({"a": [1, 2], "b": ["x", None]}))
    [b'{"a":1,"b":"x"}', b'{"a":2,"b":null}']
    """
    if frame.is_empty():
        return []
    if fmt == "msgpack":
        try:
            import msgpack
        except ImportError as exc:
            raise MissingDependencyError("msgpack", "stream") from exc
        return [msgpack.packb(row) for row in frame.to_dicts()]
    text = frame.write_ndjson().encode()
    return text.split(b"\n")[:-1] if text.endswith(b"\n") else text.split(b"\n")


_Held = tuple[float, int, str, bytes, str, str]  # release, reading, topic, payload, id, category


@dataclass
class _Tick:
    topics: list[str]
    payloads: list[bytes]
    ids: list[str]
    truth: pl.DataFrame
    counts: Counter[str]
    held: list[_Held]

    @classmethod
    def empty(cls) -> _Tick:
        return cls([], [], [], pl.DataFrame(schema=TRUTH_SCHEMA), Counter(), [])


def _batch(out: _Tick, due: list[_Held], at: float) -> SimBatch:
    counts = out.counts
    for _, _, topic, payload, msg_id, category in due:
        out.topics.append(topic)
        out.payloads.append(payload)
        out.ids.append(msg_id)
        counts[category] += 1
        if category != "duplicate":
            counts["valid"] += 1
    return SimBatch(out.topics, out.payloads, out.truth, out.ids, at, counts)


class _Devices:
    """Per-device parameters and anomaly state; :meth:`tick` makes readings ``j0 .. j1``."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator, start: float) -> None:
        n = cfg.devices
        self.cfg, self.rng, self.start = cfg, rng, start
        names = [f"d{i:04d}" for i in range(n)]
        sites = [f"s{i % cfg.sites + 1}" for i in range(n)]
        self.names = pl.Series("device", names)
        self.sites = pl.Series("site", sites)
        self.topics = np.array(
            [cfg.topic.format(site=s, device=d) for s, d in zip(sites, names, strict=True)],
            dtype=object,
        )
        self.temp_base = rng.uniform(18.0, 26.0, n)
        self.temp_amp = rng.uniform(2.0, 6.0, n)
        self.phase = rng.uniform(0.0, 2 * math.pi, n)
        self.drift = rng.uniform(-0.5, 0.5, n) / 3600  # °C per second
        self.hum_base = rng.uniform(35.0, 65.0, n)
        self.hum_coupling = rng.uniform(1.5, 3.0, n)
        self.vib_median = rng.uniform(0.5, 3.0, n)
        self.battery = rng.uniform(40.0, 100.0, n)
        self.drain = rng.uniform(0.2, 2.0, n) / 3600  # % per second
        self.sigma = np.stack([np.full(n, 0.2), np.full(n, 1.0), self.vib_median * 0.25], axis=1)
        self.kinds = np.array([ANOMALY_KINDS.index(k) for k in cfg.anomaly_kinds])
        self.remaining = np.zeros((n, len(METRICS)), dtype=np.int64)
        self.kind = np.zeros((n, len(METRICS)), dtype=np.int64)
        self.frozen = np.zeros((n, len(METRICS)))
        self.offset = np.zeros((n, len(METRICS)))
        self.episode = np.zeros((n, len(METRICS)), dtype=np.int64)
        self.episodes = 0

    def tick(self, j0: int, j1: int) -> _Tick:
        cfg, rng = self.cfg, self.rng
        j = np.arange(j0, j1)
        n = len(j)
        if n == 0:
            return _Tick.empty()
        dev = j % cfg.devices
        offset = j / cfg.rate
        micros = np.round((self.start + offset) * 1e6).astype(np.int64)
        day = 2 * math.pi * ((micros / 1e6) % 86400) / 86400
        cycle = self.temp_amp[dev] * np.sin(day + self.phase[dev]) + self.drift[dev] * offset
        values = np.stack(
            [
                self.temp_base[dev] + cycle + rng.normal(0.0, 0.2, n),
                self.hum_base[dev] - self.hum_coupling[dev] * cycle + rng.normal(0.0, 1.0, n),
                self.vib_median[dev] * np.exp(rng.normal(0.0, 0.25, n)),
            ],
            axis=1,
        )
        rows, metrics, kinds, episodes = self._inject(dev, values)
        values[:, 1] = np.clip(values[:, 1], 0.0, 100.0)
        values[:, 2] = np.clip(values[:, 2], 0.0, None)
        battery = np.clip(self.battery[dev] - self.drain[dev] * offset, 0.0, 100.0)
        devices = self.names.gather(dev)
        seq = pl.Series(j // cfg.devices).cast(pl.String).str.zfill(6)
        ids = (devices + "-" + seq).alias("msg_id")
        frame = pl.DataFrame(
            [
                ids,
                devices,
                self.sites.gather(dev),
                pl.Series("ts", micros / 1e6),
                pl.Series("temperature", np.round(values[:, 0], 2)),
                pl.Series("humidity", np.round(values[:, 1], 2)),
                pl.Series("vibration", np.round(values[:, 2], 3)),
                pl.Series("battery", np.round(battery, 1)),
            ]
        )
        payloads = to_payloads(frame, cfg.fmt)
        truth = pl.DataFrame(
            {
                "msg_id": ids.gather(rows),
                "device": devices.gather(rows),
                "ts": pl.Series(micros[rows]).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
                "metric": pl.Series(
                    np.array(METRICS, dtype=object)[metrics].tolist(), dtype=pl.String
                ),
                "kind": pl.Series(
                    np.array(ANOMALY_KINDS, dtype=object)[kinds].tolist(), dtype=pl.String
                ),
                "episode": pl.Series(episodes, dtype=pl.Int64),
            },
            schema=TRUTH_SCHEMA,
        )
        return self._faults(j, offset, dev, rows, ids.to_list(), payloads, truth)

    def _inject(
        self, dev: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply running and new anomalies to ``values`` in place; their truth, by row."""
        cfg, rng = self.cfg, self.rng
        n, per_round = len(dev), cfg.devices
        starts = rng.random(n) < cfg.anomaly_rate
        metric = rng.integers(len(METRICS), size=n)
        kind = self.kinds[rng.integers(len(self.kinds), size=n)]
        sign = np.where((rng.random(n) < 0.5) & (metric != 2), -1.0, 1.0)  # vibration: up
        size = np.where(kind == 0, rng.uniform(6.0, 10.0, n), rng.uniform(4.0, 8.0, n))
        found: list[tuple[np.ndarray, ...]] = []
        # A round holds each device at most once, so per-device state updates vectorise.
        for first in range(0, n, per_round):
            rows = np.arange(first, min(n, first + per_round))
            d = dev[rows]
            running = self.remaining[d] > 0
            ri, mi = np.nonzero(running)
            if ri.size:
                r, dd = rows[ri], d[ri]
                k = self.kind[dd, mi]
                stuck, shift = k == 1, k == 2
                values[r[stuck], mi[stuck]] = self.frozen[dd[stuck], mi[stuck]]
                values[r[shift], mi[shift]] += self.offset[dd[shift], mi[shift]]
                self.remaining[dd, mi] -= 1
                found.append((r, mi, k, self.episode[dd, mi]))
            new = starts[rows] & ~running[np.arange(len(rows)), metric[rows]]
            if not new.any():
                continue
            r = rows[new]
            dd, m, k = dev[r], metric[r], kind[r]
            episodes = np.arange(self.episodes, self.episodes + len(r))
            self.episodes += len(r)
            delta = sign[r] * size[r] * self.sigma[dd, m]
            values[r, m] += np.where(k == 1, 0.0, delta)
            self.frozen[dd, m] = values[r, m]
            self.offset[dd, m] = delta
            self.kind[dd, m] = k
            self.episode[dd, m] = episodes
            self.remaining[dd, m] = np.where(k == 0, 0, cfg.anomaly_length - 1)
            found.append((r, m, k, episodes))
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        rows, metrics, kinds, episodes = (
            np.concatenate(parts) for parts in zip(*found, strict=True)
        )
        order = np.argsort(rows, kind="stable")
        return rows[order], metrics[order], kinds[order], episodes[order]

    def _faults(
        self,
        j: np.ndarray,
        offset: np.ndarray,
        dev: np.ndarray,
        anomalous: np.ndarray,
        ids: list[str],
        payloads: list[bytes],
        truth: pl.DataFrame,
    ) -> _Tick:
        """Pick malformed, late, out-of-order and duplicated readings (disjoint sets)."""
        cfg, rng = self.cfg, self.rng
        n = len(j)
        u = rng.random(n)
        bad_kind = rng.integers(len(MALFORMED_KINDS), size=n)
        gap = 2 / cfg.ticks_per_second
        disorder = rng.uniform(gap, max(gap, cfg.out_of_order_window), n)
        repeat = rng.uniform(0.0, cfg.duplicate_delay, n)
        clean = np.ones(n, dtype=bool)
        clean[anomalous] = False
        edges = np.cumsum(
            [
                cfg.malformed_fraction,
                cfg.late_fraction,
                cfg.out_of_order_fraction,
                cfg.duplicate_fraction,
            ]
        )
        band = np.searchsorted(edges, u, side="right")  # 0 malformed, 1 late, 2 ooo, 3 dup
        malformed = (band == 0) & clean
        late = (band == 1) & clean & (offset + cfg.late_by <= cfg.duration)
        ooo = (band == 2) & clean & (offset + disorder <= cfg.duration)
        dup = band == 3
        counts: Counter[str] = Counter()
        for i in np.nonzero(malformed)[0]:
            kind = MALFORMED_KINDS[bad_kind[i]]
            payloads[i] = self._corrupt(payloads[i], kind)
            counts[kind] += 1
        topics = self.topics[dev]
        held: list[_Held] = []
        for mask, delay, category in (
            (late, None, "late"),
            (ooo, disorder, "out_of_order"),
            (dup, repeat, "duplicate"),
        ):
            for i in np.nonzero(mask)[0]:
                wait = cfg.late_by if delay is None else float(delay[i])
                held.append(
                    (float(offset[i]) + wait, int(j[i]), topics[i], payloads[i], ids[i], category)
                )
        now = np.nonzero(~(late | ooo))[0]
        counts["valid"] = int(np.count_nonzero(~(late | ooo | malformed)))
        return _Tick(
            topics[now].tolist(),
            [payloads[i] for i in now],
            [ids[i] for i in now],
            truth,
            counts,
            held,
        )

    def _corrupt(self, payload: bytes, kind: str) -> bytes:
        if kind == "truncated":
            return payload[: len(payload) // 2]
        if kind == "garbage":  # 0xff is never UTF-8, 0xc1 never MessagePack
            return (b"\xff" if self.cfg.fmt == "json" else b"\xc1") + self.rng.bytes(15)
        if self.cfg.fmt == "msgpack":
            import msgpack

            obj = msgpack.unpackb(payload)
        else:
            obj = json.loads(payload)
        if kind == "missing_device":
            del obj["device"]
        else:
            obj["ts"] = "not-a-time"
        if self.cfg.fmt == "msgpack":
            return bytes(msgpack.packb(obj))
        return json.dumps(obj, separators=(",", ":")).encode()
