"""Judge detected anomalies against the simulator's ground truth: precision and recall.

Anomalies are episodes (a spike is one reading; a level shift or a stuck sensor runs for
several), so they are judged as events, the way streaming-anomaly benchmarks do:

- **recall**: the share of injected episodes of the judged kinds (spikes and level shifts by
  default) with at least one reading flagged by the detector;
- **precision**: the share of flagged readings that fall on an injected anomaly of any kind,
  or on one of the ``settle`` readings right after an episode ends (a level shift that ends
  is a second real change in the signal). Readings are matched by message id; the
  simulator's ids end in the device's reading number (``d0007-000123``).

Stuck sensors are not judged for recall by default: a value frozen inside the normal range
is not a point anomaly any detector here is built to see.

>>> import polars as pl
>>> truth = pl.DataFrame({"msg_id": ["d1-000005", "d1-000009", "d1-000010", "d2-000003"],
...                       "metric": ["t"] * 4, "episode": [0, 1, 1, 2],
...                       "kind": ["spike", "level_shift", "level_shift", "stuck"]})
>>> found = pl.DataFrame({"msg_id": ["d1-000005", "d1-000011", "d1-000030"],
...                       "metric": ["t"] * 3, "detector": ["ewma"] * 3})
>>> s = score_detections(found, truth)[0]
>>> s.flagged, s.true_positives, s.episodes_found, s.episodes
(3, 2, 1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

_SEQ = r"^(.*)-(\d+)$"


@dataclass(frozen=True)
class DetectionScore:
    """How one detector did over the metrics it watches."""

    detector: str
    metrics: tuple[str, ...]
    flagged: int
    true_positives: int
    episodes: int
    episodes_found: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else 0.0

    @property
    def recall(self) -> float:
        return self.episodes_found / self.episodes if self.episodes else 0.0


def score_detections(
    anomalies: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    kinds: Sequence[str] = ("spike", "level_shift"),
    settle: int = 5,
) -> list[DetectionScore]:
    """One score per detector in ``anomalies`` (columns msg_id, metric, detector), judged on
    the truth rows (msg_id, metric, kind, episode) over the metrics the detector watches."""
    truth = truth.select("msg_id", "metric", "kind", "episode")
    anomalous = _with_settling(truth, settle)
    scores = []
    for detector in sorted(anomalies["detector"].unique().to_list()):
        flagged = (
            anomalies.filter(pl.col("detector") == detector).select("msg_id", "metric").unique()
        )
        metrics = tuple(sorted(flagged["metric"].unique().to_list()))
        judged = truth.filter(pl.col("metric").is_in(list(metrics)) & pl.col("kind").is_in(kinds))
        found = judged.join(flagged, on=["msg_id", "metric"], how="semi")
        scores.append(
            DetectionScore(
                detector=detector,
                metrics=metrics,
                flagged=flagged.height,
                true_positives=flagged.join(anomalous, on=["msg_id", "metric"], how="semi").height,
                episodes=judged["episode"].n_unique(),
                episodes_found=found["episode"].n_unique(),
            )
        )
    return scores


def _with_settling(truth: pl.DataFrame, settle: int) -> pl.DataFrame:
    """The anomalous (msg_id, metric) pairs plus the ``settle`` readings after each episode."""
    parsed = truth.with_columns(
        pl.col("msg_id").str.extract(_SEQ, 1).alias("_device"),
        pl.col("msg_id").str.extract(_SEQ, 2).alias("_digits"),
    ).filter(pl.col("_digits").is_not_null())
    ends = parsed.group_by("episode", "metric").agg(
        pl.col("_device").first(),
        pl.col("_digits").max(),
    )
    after = [
        ends.select(
            (
                pl.col("_device")
                + "-"
                + (pl.col("_digits").cast(pl.Int64) + step)
                .cast(pl.String)
                .str.zfill(pl.col("_digits").str.len_chars())
            ).alias("msg_id"),
            "metric",
        )
        for step in range(1, settle + 1)
    ]
    return pl.concat([truth.select("msg_id", "metric"), *after]).unique()
