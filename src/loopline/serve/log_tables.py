"""The serving log in the metadata database: requests, feedback, events, A/B exposures and
the run-time state of experiments (the kill switch).

The tables are declared on :data:`loopline.store.metadata_tables.METADATA`, so a
:class:`~loopline.store.metadata.MetadataStore` opened after this module is imported creates
them; :func:`ensure_tables` creates them on a store opened earlier (idempotent, safe when
several server processes start together). They are what the monitoring capability reads:

- ``serve_requests``: one row per logged prediction request (``shadow`` true for a shadow
  challenger's row of the same request), inputs with PII fields masked, outputs, latency;
- ``serve_feedback``: labels posted to ``/v1/feedback`` for a request id;
- ``serve_events``: recommender events (``/v1/events``) with the user's experiment variant;
- ``ab_exposures``: a unit (user) seen in an experiment variant (once per unit and server
  process; the report keeps each unit's first exposure);
- ``serve_experiment_state``: experiments stopped or started at run time
  (``loopline ab stop|start``), read by every server process.

>>> import tempfile
>>> from pathlib import Path
>>> from loopline.store.metadata import MetadataStore
>>> store = MetadataStore("sqlite:///m.db", base_dir=Path(tempfile.mkdtemp()))
>>> ensure_tables(store)
>>> names = set(sa.inspect(store.engine).get_table_names())
>>> sorted(t.name for t in SERVE_TABLES if t.name in names)
['ab_exposures', 'serve_events', 'serve_experiment_state', 'serve_feedback', 'serve_requests']
>>> store.close()
"""

from __future__ import annotations

import logging
import weakref

import sqlalchemy as sa

from loopline.errors import StoreError
from loopline.store.metadata import MetadataStore
from loopline.store.metadata_tables import METADATA, JsonDocument

log = logging.getLogger(__name__)

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""Surrogate row ids: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite."""
_TIME = sa.DateTime(timezone=True)

serve_requests = sa.Table(
    "serve_requests",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("time", _TIME, nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("experiment", sa.String(255)),
    sa.Column("variant", sa.String(255)),
    sa.Column("unit_id", sa.String(255)),
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
    sa.Column("inputs", JsonDocument()),
    sa.Column("outputs", JsonDocument()),
    sa.Column("latency_ms", sa.Float),
    sa.Index("serve_requests_request_id", "request_id"),
    sa.Index("serve_requests_model_time", "model", "time"),
    sa.Index("serve_requests_experiment", "experiment", "variant"),
)

serve_feedback = sa.Table(
    "serve_feedback",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("time", _TIME, nullable=False),
    sa.Column("label", JsonDocument()),
    sa.Column("unit_id", sa.String(255)),
    sa.Index("serve_feedback_request_id", "request_id"),
    sa.Index("serve_feedback_time", "time"),
)

serve_events = sa.Table(
    "serve_events",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("time", _TIME, nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("item", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("experiment", sa.String(255)),
    sa.Column("variant", sa.String(255)),
    sa.Index("serve_events_type_user", "event_type", "user", "time"),
    sa.Index("serve_events_experiment", "experiment", "variant"),
)

ab_exposures = sa.Table(
    "ab_exposures",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("time", _TIME, nullable=False),
    sa.Column("experiment", sa.String(255), nullable=False),
    sa.Column("variant", sa.String(255), nullable=False),
    sa.Column("unit_id", sa.String(255), nullable=False),
    sa.Column("request_id", sa.String(128)),
    sa.Index("ab_exposures_experiment_unit", "experiment", "unit_id", "time"),
)

serve_experiment_state = sa.Table(
    "serve_experiment_state",
    METADATA,
    sa.Column("experiment", sa.String(255), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("updated_at", _TIME, nullable=False),
    sa.Column("actor", sa.String(255)),
)

SERVE_TABLES = (serve_requests, serve_feedback, serve_events, ab_exposures, serve_experiment_state)
"""Every table of the serving log, in creation order."""

_ENSURED: weakref.WeakSet[MetadataStore] = weakref.WeakSet()
_HINT = "check the metadata database (stores.metadata_url) is reachable and writable"


def ensure_tables(metadata: MetadataStore) -> None:
    """Create the serving tables in ``metadata`` if they are missing (once per store object).

    Two server processes creating them at the same moment can race on PostgreSQL; the
    loser's error is ignored when the tables exist afterwards.
    """
    if metadata in _ENSURED:
        return
    engine = metadata.engine
    try:
        METADATA.create_all(engine, tables=list(SERVE_TABLES), checkfirst=True)
    except sa.exc.SQLAlchemyError as exc:
        existing = set(sa.inspect(engine).get_table_names())
        if not all(t.name in existing for t in SERVE_TABLES):
            raise StoreError(
                "cannot create the serving log tables", url=metadata.display_url, hint=_HINT
            ) from exc
        log.debug("serving tables created by another process: %s", exc)
    _ENSURED.add(metadata)
