"""Turn anomalies into alerts: grouped, deduplicated, cooled down, recorded and delivered.

Anomalies of one message and metric are grouped first (``min_detectors`` of them must agree).
A group alerts when one of its detectors is out of its cooldown for that device and metric,
measured in event time: a new alert for (device, metric, detector) only when
``event_time ≥ last alert's event_time + cooldown``. A message and metric never alert twice.
Alerts go to the metadata table ``stream_alerts`` (defined here on
:data:`loopline.store.metadata.METADATA`, so import this module before opening the
:class:`~loopline.store.metadata.MetadataStore` that should hold it), to a Slack-compatible
webhook and to an MQTT topic through the ``publish`` callable the processor passes in.
The cooldown and dedupe memory is seeded from the table, so a restart does not re-alert.

>>> import tempfile
>>> from datetime import UTC, datetime
>>> from pathlib import Path
>>> from loopline.config.streams import AlertConfig
>>> store = MetadataStore("sqlite:///m.db", base_dir=Path(tempfile.mkdtemp()))
>>> alerts = AlertManager(AlertConfig(cooldown=60), pipeline="plant", metadata=store)
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> raised = alerts.offer(pl.DataFrame({
...     "device": ["d1", "d1"], "metric": ["temp", "temp"], "detector": ["zscore", "zscore"],
...     "event_time": [t0, t0.replace(second=30)], "value": [80.0, 81.0], "score": [9.0, 9.5],
...     "msg_id": ["m1", "m2"]}))
>>> raised["msg_id"].to_list(), [a["detectors"] for a in list_alerts(store, pipeline="plant")]
(['m1'], [['zscore']])
>>> store.close()
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from loopline.config.streams import AlertConfig
from loopline.errors import StoreError, TransportError
from loopline.store.metadata import METADATA, JsonDocument, MetadataStore

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 3.0
"""Seconds a webhook may take; a slow or failing one is logged and skipped."""
SEED_LIMIT = 10_000
"""Newest alerts per pipeline read back at start-up to seed the cooldown and dedupe memory."""
FEW_ANOMALIES = 64
"""Up to this many anomalies in a batch, alerts group them in Python (no Polars frames)."""

stream_alerts = sa.Table(
    "stream_alerts",
    METADATA,
    sa.Column("alert_id", sa.String(64), primary_key=True),
    sa.Column("pipeline", sa.String(255), nullable=False),
    sa.Column("device", sa.String(255), nullable=False),
    sa.Column("metric", sa.String(255), nullable=False),
    sa.Column("detectors", JsonDocument(), nullable=False),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("score", sa.Float),
    sa.Column("msg_id", sa.String(255), nullable=False),
    sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("stream_alerts_pipeline_time", "pipeline", "event_time"),
)

ANOMALY_COLUMNS = ("device", "metric", "detector", "event_time", "value", "score", "msg_id")
ALERT_SCHEMA = pl.Schema(
    {
        "alert_id": pl.String(),
        "pipeline": pl.String(),
        "device": pl.String(),
        "metric": pl.String(),
        "detectors": pl.List(pl.String),
        "event_time": pl.Datetime("us", "UTC"),
        "value": pl.Float64(),
        "score": pl.Float64(),
        "msg_id": pl.String(),
        "raised_at": pl.Datetime("us", "UTC"),
    }
)


class AlertManager:
    """Raises alerts for one pipeline; see the module docstring for the rules."""

    def __init__(
        self,
        config: AlertConfig,
        *,
        pipeline: str,
        metadata: MetadataStore | None,
        publish: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.metadata = metadata
        self.publish = publish
        self.cooldown = timedelta(seconds=config.cooldown)
        self.last_alert_: dict[tuple[str, str, str], datetime] = {}
        self.alerted_: set[tuple[str, str]] = set()
        if metadata is not None:
            self._seed(metadata)

    def offer(self, anomalies: pl.DataFrame) -> pl.DataFrame:
        """Alerts raised for ``anomalies`` (device, metric, detector, event_time, value,
        score, msg_id), recorded and delivered; empty (same columns) when none."""
        raised = [row for row in self._groups(anomalies) if self._admit(row)]
        alerts = pl.DataFrame(raised, schema=ALERT_SCHEMA)
        if raised:
            self._record(raised)
            self._post(raised)
            self._publish(raised)
        return alerts

    def _groups(self, anomalies: pl.DataFrame) -> list[dict[str, Any]]:
        if anomalies.is_empty():
            return []
        typed = anomalies.select(ANOMALY_COLUMNS).with_columns(
            pl.col("device", "metric", "detector", "msg_id").cast(pl.String),
            _utc_time(anomalies.schema["event_time"]),
            pl.col("value", "score").cast(pl.Float64),
        )
        if typed.height <= FEW_ANOMALIES:
            few = self._few_groups(typed.rows())
            if few is not None:
                return few
        groups = (
            typed.group_by("msg_id", "metric", maintain_order=True)
            .agg(
                pl.col("device").first(),
                pl.col("detector").unique().sort().alias("detectors"),
                pl.col("event_time").first(),
                pl.col("value").first(),
                pl.col("score").max(),
            )
            .filter(pl.col("detectors").list.len() >= self.config.min_detectors)
            .sort("event_time", "msg_id", "metric", maintain_order=True)
        )
        return groups.to_dicts()

    def _few_groups(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]] | None:
        """:meth:`_groups` in plain Python for a few rows (the usual micro-batch), or
        ``None`` where Polars' rules for nulls and NaN would matter."""
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for device, metric, detector, event_time, value, score, msg_id in rows:
            if None in (metric, detector, event_time, msg_id, score) or math.isnan(score):
                return None
            group = groups.get((msg_id, metric))
            if group is None:
                groups[msg_id, metric] = {
                    "msg_id": msg_id,
                    "metric": metric,
                    "device": device,
                    "detectors": {detector},
                    "event_time": event_time,
                    "value": value,
                    "score": score,
                }
            else:
                group["detectors"].add(detector)
                group["score"] = max(group["score"], score)
        kept = [g for g in groups.values() if len(g["detectors"]) >= self.config.min_detectors]
        for group in kept:
            group["detectors"] = sorted(group["detectors"])
        return sorted(kept, key=lambda g: (g["event_time"], g["msg_id"], g["metric"]))

    def _admit(self, group: dict[str, Any]) -> bool:
        """Whether ``group`` alerts; if it does, it becomes a full alert row and is remembered."""
        device, metric, event_time = group["device"], group["metric"], group["event_time"]
        if (group["msg_id"], metric) in self.alerted_:
            return False
        keys = [(device, metric, d) for d in group["detectors"]]
        if all(
            k in self.last_alert_ and event_time < self.last_alert_[k] + self.cooldown for k in keys
        ):
            return False
        for k in keys:
            self.last_alert_[k] = max(event_time, self.last_alert_.get(k, event_time))
        self.alerted_.add((group["msg_id"], metric))
        group["alert_id"] = alert_id(self.pipeline, group["msg_id"], metric)
        group["pipeline"] = self.pipeline
        group["raised_at"] = datetime.now(UTC)
        for field in ("value", "score"):
            if group[field] is not None and not math.isfinite(group[field]):
                group[field] = None
        return True

    def _seed(self, metadata: MetadataStore) -> None:
        query = (
            sa.select(stream_alerts)
            .where(stream_alerts.c.pipeline == self.pipeline)
            .order_by(stream_alerts.c.event_time.desc())
            .limit(SEED_LIMIT)
        )
        try:
            with metadata.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                "cannot read earlier alerts", table="stream_alerts", hint=_STORE_HINT
            ) from exc
        for row in rows:
            event_time = _utc(row["event_time"])
            self.alerted_.add((row["msg_id"], row["metric"]))
            for detector in row["detectors"]:
                key = (row["device"], row["metric"], detector)
                self.last_alert_[key] = max(event_time, self.last_alert_.get(key, event_time))

    def _record(self, alerts: list[dict[str, Any]]) -> None:
        if self.metadata is None:
            return
        engine = self.metadata.engine
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement: Any = pg_insert(stream_alerts).on_conflict_do_nothing()
        elif engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(stream_alerts).on_conflict_do_nothing()
        else:
            statement = stream_alerts.insert()
        try:
            with engine.begin() as conn:
                conn.execute(statement, alerts)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"cannot record {len(alerts)} alert(s)", table="stream_alerts", hint=_STORE_HINT
            ) from exc

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        url = self.config.webhook_url
        if not url:
            return
        import httpx  # only with a webhook configured

        lines = "\n".join(
            f"• {a['device']} {a['metric']}={a['value']} at {a['event_time']:%Y-%m-%d %H:%M:%S}"
            f" ({', '.join(a['detectors'])}; score {a['score']:.3g})"
            if a["score"] is not None
            else f"• {a['device']} {a['metric']}={a['value']} ({', '.join(a['detectors'])})"
            for a in alerts
        )
        body = {
            "text": f"*loopline stream {self.pipeline}: {len(alerts)} anomaly alert(s)*\n{lines}",
            "loopline": {"pipeline": self.pipeline, "alerts": [_jsonable(a) for a in alerts]},
        }
        try:
            response = httpx.post(url, json=body, timeout=WEBHOOK_TIMEOUT)
        except httpx.HTTPError as exc:
            log.warning("alert webhook %s unreachable: %s", url, exc)
            return
        if response.is_error:
            log.warning("alert webhook %s answered %s", url, response.status_code)

    def _publish(self, alerts: list[dict[str, Any]]) -> None:
        topic = self.config.mqtt_topic
        if not topic or self.publish is None:
            return
        for alert in alerts:
            payload = json.dumps(_jsonable(alert), separators=(",", ":")).encode()
            try:
                self.publish(topic, payload)
            except TransportError as exc:
                log.warning("alert not published to %s: %s", topic, exc)


_STORE_HINT = "check the metadata database (metadata_url) is reachable and writable"


def alert_id(pipeline: str, msg_id: str, metric: str) -> str:
    """The stable id of the alert for one message and metric (so a retry cannot add a row).

    >>> alert_id("plant", "m1", "temp")
    'a4b14836ac644df3543c49a104e655c0'
    """
    return hashlib.sha256(f"{pipeline}\x1f{msg_id}\x1f{metric}".encode()).hexdigest()[:32]


def list_alerts(
    metadata: MetadataStore, *, pipeline: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts (by event time), of one pipeline or of all."""
    query = sa.select(stream_alerts)
    if pipeline is not None:
        query = query.where(stream_alerts.c.pipeline == pipeline)
    query = query.order_by(
        stream_alerts.c.event_time.desc(), stream_alerts.c.raised_at.desc()
    ).limit(limit)
    try:
        with metadata.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError("cannot list alerts", table="stream_alerts", hint=_STORE_HINT) from exc
    return [
        dict(row) | {"event_time": _utc(row["event_time"]), "raised_at": _utc(row["raised_at"])}
        for row in rows
    ]


def _utc_time(dtype: pl.DataType) -> pl.Expr:
    """``event_time`` as Datetime(us, UTC); a naive column is taken to be UTC already."""
    column = pl.col("event_time").dt.cast_time_unit("us")
    if getattr(dtype, "time_zone", None) is None:
        return column.dt.replace_time_zone("UTC")
    return column.dt.convert_time_zone("UTC")


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _jsonable(alert: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in alert.items()
        if k in ALERT_SCHEMA
    }
