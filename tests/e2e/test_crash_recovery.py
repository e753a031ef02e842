"""kill -9 the ingest process mid-run, re-run: exact rows, no duplicates, state right."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from loopline.config import config_from_dict
from loopline.ingest.ledger import RunLedger
from loopline.ingest.pipeline import IngestPipeline
from loopline.store.metadata import MetadataStore
from loopline.store.warehouse import open_warehouse

FILES, ROWS = 24, 5_000
RUNNER = """
import sys
import time
from pathlib import Path
from loopline.config import config_from_dict
from loopline.ingest.pipeline import IngestPipeline
from loopline.store.warehouse import SqlWarehouse
import yaml

commit = SqlWarehouse.commit_batch

def reporting_commit(self, *args, **kwargs):  # tells the test a batch is durable
    result = commit(self, *args, **kwargs)
    print("committed", file=sys.stderr, flush=True)
    time.sleep(0.02)  # a pace the kill can land in on any machine (a fast one finished first)
    return result

SqlWarehouse.commit_batch = reporting_commit
cfg = config_from_dict(yaml.safe_load(Path(sys.argv[1]).read_text()), project_dir=Path(sys.argv[2]))
IngestPipeline(cfg, "events").run()
"""


def write_project(tmp_path: Path, warehouse_url: str) -> dict[str, object]:
    data = tmp_path / "data"
    data.mkdir()
    for f in range(FILES):
        lines = [f"{f * ROWS + i},{i % 7},v{i}" for i in range(ROWS)]
        (data / f"part-{f:03d}.csv").write_text("id,k,v\n" + "\n".join(lines) + "\n")
    config = {
        "stores": {"warehouse_url": warehouse_url},
        "ingest": {
            "events": {
                "source": {"type": "file", "path": "data/*.csv", "batch_size": 500},
                "contract": {"columns": {"id": "int64", "k": {"type": "int64", "max": 5}}},
                "destination": {"table": "events"},
            }
        },
    }
    import yaml

    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    return config


def runs_started(metadata_db: Path) -> int:
    if not metadata_db.exists():
        return 0
    engine = sa.create_engine(f"sqlite:///{metadata_db}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM ingest_runs")).scalar() or 0)
    except sa.exc.OperationalError:
        return 0
    finally:
        engine.dispose()


def kill_mid_run(tmp_path: Path, delay: float) -> None:
    before = runs_started(tmp_path / ".loopline" / "metadata.db")
    log = tmp_path / "runner.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(tmp_path / "job.yaml"), str(tmp_path)],
            stderr=stderr,
        )
        deadline = time.monotonic() + 60
        # Killed only once the run has started and committed a batch: a slow start (imports,
        # a loaded machine) must not decide whether the killed runs left anything behind.
        while (
            runs_started(tmp_path / ".loopline" / "metadata.db") == before
            or "committed" not in log.read_text()
        ):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(delay)
        assert proc.poll() is None, "the run finished before it could be killed: make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["duckdb", pytest.param("postgres", marks=pytest.mark.services)]
)
def test_kill_9_mid_run_then_rerun_loses_and_duplicates_nothing(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = (
        "duckdb:///.loopline/warehouse.duckdb"
        if backend == "duckdb"
        else request.getfixturevalue("postgres_url")
    )
    config = write_project(tmp_path, url)
    for delay in (0.8, 0.4):
        kill_mid_run(tmp_path, delay)
    cfg = config_from_dict(config, project_dir=tmp_path, env={})
    run = IngestPipeline(cfg, "events").run()
    assert run.status == "succeeded"
    assert run.rows_read < FILES * ROWS, "the killed runs committed nothing"
    wh = open_warehouse(url, base_dir=tmp_path)
    try:
        ids = wh.read_table("events").column("id").to_pylist()
        expected = [i for i in range(FILES * ROWS) if i % ROWS % 7 <= 5]
        assert len(ids) == len(set(ids)) == len(expected)
        assert sorted(ids) == expected
        quarantined = wh.read_table("_loopline_quarantine").column("_record").to_pylist()
        assert len(quarantined) == FILES * ROWS - len(expected)
        state = wh.read_state("events")
        assert state is not None
        assert len(state["files"]) == FILES
    finally:
        wh.close()
    store = MetadataStore(cfg.stores.metadata_url, base_dir=tmp_path)
    statuses = [(r.status, r.error or "") for r in RunLedger(store).list(job="events")]
    store.close()
    assert statuses[0] == ("succeeded", "")
    assert [s for s, _ in statuses[1:]] == ["failed", "failed"]
    assert all(e.startswith("interrupted") for _, e in statuses[1:])


SQL_ROWS = 60_000


@pytest.mark.slow
@pytest.mark.services
def test_kill_9_mid_incremental_sql_run_then_rerun_leaves_the_cursor_right(
    tmp_path: Path, postgres_url: str
) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE events (id bigint, updated_at bigint, v text)"))
        # Ten rows share each cursor value: ties across chunk boundaries must not be lost.
        conn.execute(
            sa.text("INSERT INTO events SELECT g, g / 10, 'v' || g FROM generate_series(1, :n) g"),
            {"n": SQL_ROWS},
        )
    engine.dispose()
    config = {
        "ingest": {
            "events": {
                "source": {
                    "type": "sql",
                    "url": postgres_url,
                    "table": "events",
                    "cursor_column": "updated_at",
                    "chunk_size": 500,
                },
                "destination": {"table": "events"},
            }
        },
    }
    import yaml

    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    for delay in (0.8, 0.4):
        kill_mid_run(tmp_path, delay)
    cfg = config_from_dict(config, project_dir=tmp_path, env={})
    run = IngestPipeline(cfg, "events").run()
    assert run.status == "succeeded"
    assert 0 < run.rows_read < SQL_ROWS, "the killed runs committed some batches"
    wh = open_warehouse(cfg.stores.warehouse_url, base_dir=tmp_path)
    try:
        ids = wh.read_table("events").column("id").to_pylist()
        assert len(ids) == len(set(ids)) == SQL_ROWS
        state = wh.read_state("events")
        assert state is not None
        assert state["cursor"] == SQL_ROWS // 10
    finally:
        wh.close()
