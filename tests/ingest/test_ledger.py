"""RunLedger: run records on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loopline.errors import StoreError
from loopline.ingest.ledger import RunLedger, RunRecord, new_run_id
from loopline.store.metadata import MetadataStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = "sqlite:///.loopline/metadata.db"
    else:
        url = request.getfixturevalue("postgres_url")
    store = MetadataStore(url, base_dir=tmp_path)
    yield store
    store.close()


@pytest.fixture
def ledger(store: MetadataStore) -> RunLedger:
    return RunLedger(store)


def start(ledger: RunLedger, job: str = "orders") -> RunRecord:
    return ledger.start(
        job=job, source="file:orders", destination="lake:orders", state_before={"seen": ["a"]}
    )


def test_a_started_run_is_visible_as_running_before_finish(
    ledger: RunLedger, store: MetadataStore
) -> None:
    run = start(ledger)
    # A second ledger on a new connection sees it: the insert was committed at once.
    other = RunLedger(MetadataStore(str(store.url), base_dir=Path("/")))
    try:
        seen = other.get(run.run_id)
    finally:
        other.store.close()
    assert seen is not None
    assert seen.status == "running"
    assert seen.ended_at is None
    assert seen.state_before == {"seen": ["a"]}


def test_finish_round_trips_counts_json_and_times(ledger: RunLedger) -> None:
    run = start(ledger)
    run.status = "failed"
    run.rows_read, run.rows_written, run.rows_quarantined, run.rows_deduplicated = 10, 7, 2, 1
    run.rule_failures = {"not_null:id": 2, "range:amount": 0}
    run.warnings = {"warn:email": 3}
    run.state_after = {"seen": ["a", "b"], "cursor": {"ts": "2025-01-01T00:00:00"}}
    run.schema_hash = "abc123"
    run.error = "source went away [source=orders]"
    run.ended_at = run.started_at + timedelta(seconds=3)
    ledger.finish(run)
    assert ledger.get(run.run_id) == run


def test_finish_sets_ended_at_when_missing(ledger: RunLedger) -> None:
    run = start(ledger)
    run.status = "succeeded"
    ledger.finish(run)
    stored = ledger.get(run.run_id)
    assert stored is not None
    assert stored.ended_at is not None
    assert stored.ended_at >= stored.started_at


def test_times_come_back_aware_in_utc(ledger: RunLedger) -> None:
    run = start(ledger)
    stored = ledger.get(run.run_id)
    assert stored is not None
    assert stored.started_at.utcoffset() == timedelta(0)
    assert abs(stored.started_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_list_is_newest_first_and_limited(ledger: RunLedger) -> None:
    ids = [start(ledger).run_id for _ in range(4)]
    listed = [r.run_id for r in ledger.list(limit=3)]
    assert listed == list(reversed(ids))[:3]


def test_list_filters_by_job(ledger: RunLedger) -> None:
    start(ledger, "orders")
    start(ledger, "customers")
    start(ledger, "orders")
    assert [r.job for r in ledger.list(job="orders")] == ["orders", "orders"]
    assert ledger.list(job="nobody") == []


def test_get_unknown_run_is_none(ledger: RunLedger) -> None:
    assert ledger.get("nope") is None


def test_finishing_an_unknown_run_is_a_store_error(ledger: RunLedger) -> None:
    run = RunRecord(
        run_id="missing", job="j", source="s", destination="d", started_at=datetime.now(UTC)
    )
    with pytest.raises(StoreError, match="not in the ledger") as info:
        ledger.finish(run)
    assert info.value.fields["run_id"] == "missing"


def test_unknown_status_is_a_store_error(ledger: RunLedger) -> None:
    run = start(ledger)
    run.status = "done"
    with pytest.raises(StoreError, match="unknown run status"):
        ledger.finish(run)


def test_run_ids_sort_by_time_and_are_unique() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    later = new_run_id(t + timedelta(microseconds=1))
    same = {new_run_id(t) for _ in range(100)}
    assert len(same) == 100
    assert all(i < later for i in same)


def test_a_new_run_closes_the_jobs_interrupted_runs_as_failed(ledger: RunLedger) -> None:
    killed = start(ledger)
    other_job = start(ledger, job="payments")
    resumed = start(ledger)
    closed = ledger.get(killed.run_id)
    assert closed is not None
    assert closed.status == "failed"
    assert "interrupted" in (closed.error or "")
    assert resumed.run_id in (closed.error or "")
    still = ledger.get(other_job.run_id)
    assert still is not None
    assert still.status == "running"


def test_sqlite3_writes_the_schema_sqlalchemy_would(tmp_path: Path) -> None:
    import sqlite3

    import sqlalchemy as sa

    from loopline.store.metadata import SQLITE_SCHEMA, ingest_runs

    direct = sqlite3.connect(tmp_path / "direct.db")
    for statement in SQLITE_SCHEMA:
        direct.execute(statement)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    ingest_runs.create(engine)
    engine.dispose()
    via_sa = sqlite3.connect(tmp_path / "sa.db")
    query = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    try:
        assert direct.execute(query).fetchall() == via_sa.execute(query).fetchall()
    finally:
        direct.close()
        via_sa.close()


def test_sqlite3_and_sqlalchemy_read_each_others_rows(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from loopline.store.metadata import ingest_runs

    store = MetadataStore("sqlite:///m.db", base_dir=tmp_path)
    try:
        assert store.sqlite_path == tmp_path / "m.db"
        ledger = RunLedger(store)
        run = start(ledger)
        run.status, run.rows_read = "succeeded", 5
        run.rule_failures, run.state_after = {"régle": 2}, {"files": {"a": [1, None]}}
        ledger.finish(run)
        with store.engine.connect() as conn:  # written by sqlite3, read by SQLAlchemy
            row = conn.execute(sa.select(ingest_runs)).mappings().one()
        assert row["started_at"] == run.started_at.replace(tzinfo=None)
        assert row["ended_at"] == run.ended_at.replace(tzinfo=None)  # type: ignore[union-attr]
        assert (row["rule_failures"], row["state_after"]) == (run.rule_failures, run.state_after)
        assert row["state_before"] == {"seen": ["a"]}
        assert (row["schema_hash"], row["error"], row["rows_read"]) == (None, None, 5)
        other = run.started_at + timedelta(seconds=1)
        with store.engine.begin() as conn:  # written by SQLAlchemy, read by sqlite3
            conn.execute(
                ingest_runs.insert().values(
                    run_id="r2", job="j", source="s", destination="d", started_at=other,
                    status="failed", rows_read=1, rows_written=0, rows_quarantined=1,
                    rows_deduplicated=0, rule_failures={}, warnings={"w": 1},
                    state_before=None, error="boom",
                )
            )  # fmt: skip
        back = ledger.get("r2")
        assert back is not None
        assert (back.started_at, back.ended_at, back.warnings) == (other, None, {"w": 1})
        assert (back.state_before, back.state_after, back.error) == (None, None, "boom")
    finally:
        store.close()


def test_a_sqlite_ledger_error_is_a_store_error(tmp_path: Path) -> None:
    store = MetadataStore("sqlite:///m.db", base_dir=tmp_path)
    ledger = RunLedger(store)
    (tmp_path / "m.db").unlink()
    (tmp_path / "m.db").mkdir()  # no longer a database file
    with pytest.raises(StoreError, match="cannot start run in the run ledger") as info:
        start(ledger)
    assert info.value.fields["url"] == f"sqlite:///{tmp_path / 'm.db'}"
