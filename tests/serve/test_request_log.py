"""RequestLog on SQLite and PostgreSQL: sampling, PII masking, bounded queue, exposures, close."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from loopline.config.serving import RequestLogConfig
from loopline.serve import request_log as request_log_module
from loopline.serve.experiments import Assignment
from loopline.serve.loaded_model import Prediction
from loopline.serve.log_tables import (
    ab_exposures,
    serve_events,
    serve_feedback,
    serve_requests,
)
from loopline.serve.request_log import RequestLog, sampled
from loopline.store.metadata import MetadataStore

ASSIGNED = Assignment("churn_ab", "v2", "2", None, None)
ROW = {"tenure": 3.0, "charges": 80.5, "contract": "monthly", "seats": 2, "Email": "a@b.c"}
OUTPUT = {"predictions": ["Yes"], "probabilities": [{"No": 0.3, "Yes": 0.7}], "labels": ["Yes"]}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = "sqlite:///meta.db"
    else:
        url = request.getfixturevalue("postgres_url")
    s = MetadataStore(url, base_dir=tmp_path)
    yield s
    s.close()


def rows_of(store: MetadataStore, table: sa.Table) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


def config(**changes: Any) -> RequestLogConfig:
    return RequestLogConfig.model_validate({"flush_interval": 60} | changes)


def log_prediction(log: RequestLog, request_id: str, **changes: Any) -> None:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "model": "churn",
        "version": "2",
        "rows": [ROW],
        "prediction": OUTPUT,
        "latency_ms": 1.5,
        "assignment": ASSIGNED,
        "unit": "u1",
    }
    log.prediction(**(fields | changes))


def test_a_prediction_is_written_with_pii_masked(store: MetadataStore) -> None:
    log = RequestLog(config(pii_fields=["email", "seats"]), store)
    log.start()
    log_prediction(log, "r1")
    log_prediction(log, "r1", shadow=True, version="3", assignment=None)
    log.close()
    live, shadow = rows_of(store, serve_requests)
    assert live["inputs"] == [ROW | {"Email": "***", "seats": "***"}]
    assert ROW["Email"] == "a@b.c"  # the request's own rows are not changed
    assert live["outputs"] == OUTPUT
    assert (live["experiment"], live["variant"], live["unit_id"], live["shadow"]) == (
        "churn_ab",
        "v2",
        "u1",
        False,
    )
    assert (shadow["version"], shadow["shadow"], shadow["experiment"]) == ("3", True, None)
    assert live["latency_ms"] == 1.5
    assert abs(live["time"].replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    assert (log.written, log.dropped, log.failed) == (2, 0, 0)


def test_a_prediction_object_is_stored_by_its_output_fields(store: MetadataStore) -> None:
    prediction = Prediction(
        model="churn",
        version="1",
        predictions=["No"],
        probabilities=[{"No": 0.9, "Yes": 0.1}],
        labels=["No"],
        threshold=0.4,
    )
    log = RequestLog(config(), store)
    log_prediction(log, "r1", prediction=prediction)
    log.close()
    (row,) = rows_of(store, serve_requests)
    assert row["outputs"] == {
        "predictions": ["No"],
        "probabilities": [{"No": 0.9, "Yes": 0.1}],
        "labels": ["No"],
        "threshold": 0.4,
    }


def test_sampling_keeps_a_prediction_and_its_feedback_together(store: MetadataStore) -> None:
    n, rate = 2000, 0.3
    log = RequestLog(config(sample_rate=rate, queue_size=10 * n), store)
    ids = [f"req-{i}" for i in range(n)]
    for request_id in ids:
        log_prediction(log, request_id)
        log.feedback(request_id=request_id, label="Yes", unit="u1")
    log.close()
    predicted = {r["request_id"] for r in rows_of(store, serve_requests)}
    labelled = {r["request_id"] for r in rows_of(store, serve_feedback)}
    assert predicted == labelled == {i for i in ids if sampled(i, rate)}
    assert abs(len(predicted) - n * rate) <= 4 * math.sqrt(n * rate * (1 - rate))


def test_sampled_is_deterministic_and_matches_the_rate() -> None:
    keys = [f"k{i}" for i in range(20_000)]
    share = sum(sampled(k, 0.1) for k in keys) / len(keys)
    assert abs(share - 0.1) <= 4 * math.sqrt(0.1 * 0.9 / len(keys))
    assert [sampled(k, 0.1) for k in keys[:100]] == [sampled(k, 0.1) for k in keys[:100]]
    assert all(sampled(k, 1.0) for k in keys[:100])
    assert not any(sampled(k, 0.0) for k in keys[:100])


def test_a_full_queue_drops_and_counts_instead_of_blocking(store: MetadataStore) -> None:
    log = RequestLog(config(queue_size=10), store)  # writer not started: nothing drains
    done = threading.Event()

    def fill() -> None:
        for i in range(25):
            log.feedback(request_id=f"r{i}", label=1, unit=None)
        done.set()

    threading.Thread(target=fill, daemon=True).start()
    assert done.wait(10), "a full queue blocked the caller"
    assert (log.pending, log.dropped, log.written) == (10, 15, 0)
    log.close()
    assert (log.written, log.pending) == (10, 0)
    assert [r["request_id"] for r in rows_of(store, serve_feedback)] == [f"r{i}" for i in range(10)]


def test_the_writer_thread_flushes_every_interval(store: MetadataStore) -> None:
    log = RequestLog(config(flush_interval=0.05), store)
    log.start()
    log.start()  # idempotent
    for i in range(30):
        log.feedback(request_id=f"r{i}", label=0, unit="u")
    deadline = time.monotonic() + 10
    while log.written < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.written == 30
    assert len(rows_of(store, serve_feedback)) == 30
    log.close()


def test_close_writes_everything_queued(store: MetadataStore) -> None:
    log = RequestLog(config(flush_interval=3600), store)
    log.start()
    for i in range(request_log_module.BATCH_ROWS + 50):  # more than one batch
        log.feedback(request_id=f"r{i}", label={"churned": True}, unit=None)
    log.close()
    rows = rows_of(store, serve_feedback)
    assert len(rows) == request_log_module.BATCH_ROWS + 50
    assert rows[0]["label"] == {"churned": True}


def test_an_exposure_is_logged_once_per_experiment_and_unit(store: MetadataStore) -> None:
    log = RequestLog(config(), store)
    other = Assignment("recs", "blend", None, None, "blend")
    for request_id in ("r1", "r2", "r3"):
        log.exposure(ASSIGNED, "u1", request_id)
        log.exposure(other, "u1", request_id)
    log.exposure(ASSIGNED, "u2", "r4")
    log.close()
    rows = rows_of(store, ab_exposures)
    assert [(r["experiment"], r["variant"], r["unit_id"], r["request_id"]) for r in rows] == [
        ("churn_ab", "v2", "u1", "r1"),
        ("recs", "blend", "u1", "r1"),
        ("churn_ab", "v2", "u2", "r4"),
    ]


def test_the_exposure_memory_is_bounded(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_log_module, "EXPOSURE_MEMORY", 2)
    log = RequestLog(config(), store)
    for unit in ("u1", "u2", "u3", "u1"):  # u1 forgotten when u3 came: logged again
        log.exposure(ASSIGNED, unit, "r")
    log.close()
    assert [r["unit_id"] for r in rows_of(store, ab_exposures)] == ["u1", "u2", "u3", "u1"]


def test_events_are_stored_in_utc_with_the_users_variant(store: MetadataStore) -> None:
    log = RequestLog(config(), store)
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    recs = Assignment("recs", "blend", None, None, "blend")
    log.event(user="u1", item="i9", event_type="click", timestamp=local, assignment=recs)
    log.event(
        user="u2", item="i9", event_type="view", timestamp=datetime(2026, 1, 1), assignment=None
    )
    log.close()
    first, second = rows_of(store, serve_events)
    assert first["time"].replace(tzinfo=UTC) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert (first["user"], first["item"], first["event_type"]) == ("u1", "i9", "click")
    assert (first["experiment"], first["variant"]) == ("recs", "blend")
    assert (second["experiment"], second["variant"]) == (None, None)


def test_a_disabled_log_writes_nothing(store: MetadataStore) -> None:
    log = RequestLog(config(enabled=False), store)
    log.start()
    log_prediction(log, "r1")
    log.feedback(request_id="r1", label=1, unit=None)
    log.exposure(ASSIGNED, "u1", "r1")
    log.close()
    assert (log.written, log.pending) == (0, 0)
    assert rows_of(store, serve_requests) == []
    assert not RequestLog(config(), None).enabled


def test_a_database_error_loses_the_batch_but_never_raises(store: MetadataStore) -> None:
    log = RequestLog(config(), store)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE serve_feedback"))
    try:
        log.feedback(request_id="r1", label=1, unit=None)
        log.flush()
        assert (log.written, log.failed) == (0, 1)
    finally:
        serve_feedback.create(store.engine)
    log.feedback(request_id="r2", label=1, unit=None)
    log.close()
    assert log.written == 1


def test_an_unloggable_row_is_skipped(store: MetadataStore) -> None:
    log = RequestLog(config(), store)
    log.event(user="u", item="i", event_type="click", timestamp="yesterday", assignment=None)  # type: ignore[arg-type]
    log.feedback(request_id="r1", label=1, unit=None)
    log.close()
    assert (log.written, log.failed) == (1, 1)
