import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import service_url

from loopline.config import LooplineConfig, config_from_dict
from loopline.config.contracts import RangeRule
from loopline.errors import FatalRuleError
from loopline.ingest import pipeline as pipeline_module
from loopline.ingest.ledger import RunLedger
from loopline.ingest.pipeline import IngestPipeline, parse_types
from loopline.store.destination import QUARANTINE_TABLE
from loopline.store.metadata import MetadataStore
from loopline.store.postgres_warehouse import APPLICATION_NAME
from loopline.store.warehouse import open_warehouse

CSV = """id,email,amount,plan
1,a@x.io,10.5,basic
2,bad-email,N/A,pro
3,c@x.io,??,basic
4,d@x.io,-3,gold
5,e@x.io,7,pro
5,e@x.io,7,pro
"""


def project(tmp_path: Path, **job_overrides: Any) -> LooplineConfig:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "a.csv").write_text(CSV)
    job: dict[str, Any] = {
        "source": "files",
        "contract": "c",
        "cleanse": [{"step": "dedupe"}],
        "destination": {"table": "customers"},
    }
    job.update(job_overrides)
    return config_from_dict(
        {
            "sources": {"files": {"type": "file", "path": "data/*.csv"}},
            "contracts": {
                "c": {
                    "columns": {
                        "id": {"type": "int64", "nullable": False},
                        "email": {"type": "string", "regex": "^[^@]+@[^@]+$"},
                        "amount": {"type": "float64", "min": 0},
                        "plan": {"type": "string", "allowed": ["basic", "pro"]},
                    }
                }
            },
            "ingest": {"customers": job},
        },
        project_dir=tmp_path,
        env={},
    )


def table(cfg: LooplineConfig, name: str) -> list[dict[str, Any]]:
    wh = open_warehouse(cfg.stores.warehouse_url, base_dir=cfg.project_dir)
    try:
        return wh.read_table(name).to_pylist()  # type: ignore[no-any-return]
    finally:
        wh.close()


def test_valid_rows_land_and_bad_rows_are_quarantined_by_rule(tmp_path: Path) -> None:
    cfg = project(tmp_path)
    run = IngestPipeline(cfg, "customers").run()
    assert run.status == "succeeded"
    assert (run.rows_read, run.rows_deduplicated) == (6, 1)
    rows = table(cfg, "customers")
    assert sorted(r["id"] for r in rows) == [1, 5]
    assert all(r["_batch_id"] and r["_source"].endswith("a.csv") for r in rows)
    assert run.rule_failures == {
        "regex:email": 1,
        "type:amount": 1,
        "range:amount": 1,
        "allowed:plan": 1,
    }
    quarantined = table(cfg, QUARANTINE_TABLE)
    assert {(q["_rule"], q["_raw_value"]) for q in quarantined} >= {
        ("type:amount", "??"),
        ("regex:email", "bad-email"),
    }
    # 'N/A' is a null token, so row 2 fails only its e-mail; row 4 fails two rules: it has
    # two quarantine entries but counts once, so read = written + quarantined + deduplicated.
    assert run.rows_written == 2
    assert len(quarantined) == 4
    assert run.rows_quarantined == 3


def test_rerun_skips_ingested_files_and_changes_nothing(tmp_path: Path) -> None:
    cfg = project(tmp_path)
    IngestPipeline(cfg, "customers").run()
    again = IngestPipeline(cfg, "customers").run()
    assert again.rows_read == 0
    assert len(table(cfg, "customers")) == 2
    store = MetadataStore(cfg.stores.metadata_url, base_dir=tmp_path)
    runs = RunLedger(store).list(job="customers")
    store.close()
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert runs[0].state_after == runs[1].state_after


def test_merge_mode_upserts_by_key(tmp_path: Path) -> None:
    cfg = project(tmp_path, destination={"table": "customers", "mode": "merge", "key": ["id"]})
    IngestPipeline(cfg, "customers").run()
    (tmp_path / "data" / "b.csv").write_text(
        "id,email,amount,plan\n1,new@x.io,99,pro\n9,z@x.io,1,basic\n"
    )
    IngestPipeline(cfg, "customers").run()
    rows = {r["id"]: r for r in table(cfg, "customers")}
    assert sorted(rows) == [1, 5, 9]
    assert rows[1]["email"] == "new@x.io"


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_fatal_rule_fails_the_run_writes_nothing_and_alerts(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    cfg = project(tmp_path)
    cfg.alerts.webhook_url = url
    cfg.contracts["c"].rules.append(RangeRule(check="range", column="id", max=3, severity="fatal"))
    with pytest.raises(FatalRuleError):
        IngestPipeline(cfg, "customers").run()
    wh = open_warehouse(cfg.stores.warehouse_url, base_dir=tmp_path)
    assert wh.table_schema("customers") is None
    assert wh.read_state("customers") is None
    wh.close()
    store = MetadataStore(cfg.stores.metadata_url, base_dir=tmp_path)
    (run,) = RunLedger(store).list()
    store.close()
    assert run.status == "failed"
    assert "range:id" in (run.error or "")
    assert len(received) == 1
    assert "customers" in received[0]["text"]


def test_without_contract_types_are_inferred_and_unparseable_values_quarantined(
    tmp_path: Path,
) -> None:
    rows = "\n".join(f"{i},{i * 1.5}" for i in range(100))
    (tmp_path / "n.csv").write_text(f"n,x\n{rows}\n100,oops\n")
    cfg = config_from_dict(
        {
            "ingest": {
                "n": {
                    "source": {"type": "file", "path": "n.csv"},
                    "destination": {"table": "n"},
                }
            }
        },
        project_dir=tmp_path,
        env={},
    )
    run = IngestPipeline(cfg, "n").run()
    assert run.rows_written == 100
    assert run.rule_failures == {"type:x": 1}
    assert isinstance(table(cfg, "n")[0]["x"], float)


def test_malformed_csv_lines_are_quarantined_and_the_rest_written(tmp_path: Path) -> None:
    lines = [f"{i},name {i}" for i in range(1, 49)]
    lines.insert(10, "bad,row,with,too,many")  # line 12 of the file (after the header)
    lines.insert(30, "short")  # line 32
    (tmp_path / "p.csv").write_text("id,name\n" + "\n".join(lines) + "\n")
    cfg = config_from_dict(
        {
            "ingest": {
                "p": {
                    "source": {"type": "file", "path": "p.csv", "batch_size": 20},
                    "destination": {"table": "p"},
                }
            }
        },
        project_dir=tmp_path,
        env={},
    )
    run = IngestPipeline(cfg, "p").run()
    assert run.status == "succeeded"
    assert (run.rows_read, run.rows_written, run.rows_quarantined) == (50, 48, 2)
    assert run.rule_failures == {"parse:csv": 2}
    rows = table(cfg, "p")
    assert sorted(r["id"] for r in rows) == list(range(1, 49))
    quarantined = sorted(table(cfg, QUARANTINE_TABLE), key=lambda q: q["_raw_value"])
    assert [(q["_rule"], q["_column"], q["_raw_value"]) for q in quarantined] == [
        ("parse:csv", None, "bad,row,with,too,many"),
        ("parse:csv", None, "short"),
    ]
    assert [json.loads(q["_record"]) for q in quarantined] == [
        {"line": 12, "reason": "expected 2 fields, got 5"},
        {"line": 32, "reason": "expected 2 fields, got 1"},
    ]
    assert all(q["_source"] == "file:p.csv" and q["_batch_id"] for q in quarantined)
    assert all(q["_ingested_at"] is not None for q in quarantined)
    assert {q["_batch_id"] for q in quarantined} <= {r["_batch_id"] for r in rows}


@pytest.mark.services
def test_a_lost_warehouse_connection_is_retried_on_a_new_one(
    tmp_path: Path, postgres_url: str
) -> None:
    lines = "".join(f"{i},{i}@x.io,{i}.5,basic\n" for i in range(1, 101))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("id,email,amount,plan\n" + lines)
    cfg = config_from_dict(
        {
            "stores": {"warehouse_url": postgres_url},
            "ingest": {
                "t": {
                    "source": {"type": "file", "path": "data/a.csv", "batch_size": 25},
                    "destination": {"table": "t"},
                }
            },
        },
        project_dir=tmp_path,
        env={},
    )
    killed: list[int] = []
    admin = sa.create_engine(service_url("postgres"))

    def kill_warehouse_connection_once(rows: int) -> None:
        if killed:
            return
        with admin.begin() as conn:
            result = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            )
            killed.append(len(result.all()))

    run = IngestPipeline(cfg, "t", on_chunk=kill_warehouse_connection_once).run()
    admin.dispose()
    assert killed == [1]
    assert run.status == "succeeded"
    ids = sorted(r["id"] for r in table(cfg, "t"))
    assert ids == list(range(1, 101))


def test_schema_drift_is_reported_in_the_run_and_evolves_the_table(tmp_path: Path) -> None:
    cfg = project(tmp_path)
    IngestPipeline(cfg, "customers").run()
    (tmp_path / "data" / "b.csv").write_text("id,email,amount,plan,tier\n7,g@x.io,3,pro,gold\n")
    run = IngestPipeline(cfg, "customers").run()
    assert run.warnings == {"drift:new_column:tier": 1}
    assert {r["id"]: r.get("tier") for r in table(cfg, "customers")} == {
        1: None,
        5: None,
        7: "gold",
    }


def test_a_csv_run_into_duckdb_loads_no_parser_or_driver_it_does_not_use(tmp_path: Path) -> None:
    # Start-up is a large share of a batch run's CPU: other formats' parsers, the encoding
    # detector (the file is UTF-8) and SQLAlchemy (the SQLite ledger uses sqlite3) must
    # stay unloaded.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text(CSV)
    script = f"""
import sys
from pathlib import Path
from loopline.config import config_from_dict
from loopline.ingest.pipeline import IngestPipeline
cfg = config_from_dict({{"ingest": {{"a": {{"source": {{"type": "file", "path": "data/a.csv"}},
    "destination": {{"table": "a"}}}}}}}}, project_dir=Path({str(tmp_path)!r}), env={{}})
run = IngestPipeline(cfg, "a").run()
assert run.rows_written == 6, run
unused = ("lxml", "ijson", "charset_normalizer", "pyarrow.parquet", "sqlalchemy", "httpx")
print(sorted(m for m in unused if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


TYPED_CSV = """id,x,y,t,d,z
1, 1.5 ,2.5,2024-01-02T03:04:05,2024-01-02,inf
2,N/A,,2024-01-02 03:04,2024-02-03,1
3,??,NaN,2024-01-02,2024-03-04,2
4,1e3,-0,,,3
5,-2,1E+2,"2024-05-06T07:08:09.5",2024-05-06,N/A
6,3,4.5,2024-01-01T00:00:00,2024-01-01,5
"""
TYPED_CONTRACT = {
    "columns": {
        "id": "int64",
        "x": {"type": "float64", "min": 0},
        "y": "float64",
        "t": {"type": "datetime", "nullable": False},
        "d": "date",
        "z": "float64",
    }
}


def typed_run(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, *, shortcut: bool, **source: Any
) -> tuple[Any, list[dict[str, Any]], list[tuple[Any, ...]]]:
    """A run of ``text`` with the typed-parsing shortcut on or off: run, rows, quarantine."""
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text(text)
    cfg = config_from_dict(
        {
            "ingest": {
                "a": {
                    "source": {"type": "file", "path": "data/a.csv", **source},
                    "contract": TYPED_CONTRACT,
                    "destination": {"table": "a"},
                }
            }
        },
        project_dir=tmp_path,
        env={},
    )
    if not shortcut:
        monkeypatch.setattr(pipeline_module, "parse_types", lambda *_: ({}, []))
    pipeline = IngestPipeline(cfg, "a")
    assert bool(pipeline._parse_types) == shortcut
    run = pipeline.run()
    monkeypatch.undo()
    # Batch ids follow chunk boundaries: the same either way.
    rows = [{k: v for k, v in r.items() if k != "_ingested_at"} for r in table(cfg, "a")]
    rows.sort(key=lambda r: r["id"])
    quarantine = sorted(
        (q["_rule"], q["_column"], q["_raw_value"]) for q in table(cfg, QUARANTINE_TABLE)
    )
    return run, rows, quarantine


def test_typed_csv_parsing_gives_what_the_text_path_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # y, t and d parse typed; x ('??') and z ('inf') fall back to text: same rows, same
    # quarantine, same counts either way.
    fast, fast_rows, fast_q = typed_run(tmp_path / "typed", TYPED_CSV, monkeypatch, shortcut=True)
    slow, slow_rows, slow_q = typed_run(tmp_path / "text", TYPED_CSV, monkeypatch, shortcut=False)
    assert fast_rows == slow_rows
    assert fast_q == slow_q
    assert (fast.rule_failures, fast.rows_written) == (slow.rule_failures, slow.rows_written)
    assert fast.rule_failures == {"type:x": 1, "type:z": 1, "range:x": 1, "not_null:t": 1}
    assert [(r["id"], r["y"]) for r in fast_rows] == [(2, None), (6, 4.5)]
    assert fast.schema_hash == slow.schema_hash


def test_a_typed_column_failing_late_is_read_again_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # > 1 MiB: the bad value is in a later block than the first, after typed batches went out;
    # the rows held for the current chunk turn to text too, so chunks (and batch ids) match.
    lines = [f"{i},{i}.5,{i % 7}.25,2024-01-02T03:04:05,2024-01-02,{i}" for i in range(60_000)]
    lines[-2] = lines[-2].replace(".25,", "x,")  # y: '<n>x' does not parse
    text = "id,x,y,t,d,z\n" + "\n".join(lines) + "\n"
    assert len(text) > 2**21
    fast, fast_rows, fast_q = typed_run(
        tmp_path / "typed", text, monkeypatch, shortcut=True, batch_size=20_000
    )
    slow, slow_rows, slow_q = typed_run(
        tmp_path / "text", text, monkeypatch, shortcut=False, batch_size=20_000
    )
    assert fast.rule_failures == slow.rule_failures == {"type:y": 1}
    assert fast_q == slow_q == [("type:y", "y", f"{59_998 % 7}x")]
    assert fast_rows == slow_rows
    assert fast.rows_written == 59_999


def test_parse_types_keeps_the_text_path_where_a_step_expects_text() -> None:
    from loopline.config.cleanse import CleanseStep
    from loopline.config.contracts import ContractConfig
    from loopline.ingest.cleanse import default_string_steps

    contract = ContractConfig.model_validate(
        {
            "columns": {
                "f": "float64",
                "t": "datetime",
                "g": {"type": "datetime", "format": "%d/%m/%Y %H:%M"},
                "n": "int64",
                "s": "string",
                "c": "float64",
            }
        }
    )

    def types(*steps: dict[str, Any]) -> list[str]:
        specs = default_string_steps([CleanseStep.validate_python(s) for s in steps])
        return sorted(parse_types(contract, specs)[0])

    assert types() == ["c", "f", "t"]
    assert types({"step": "trim"}) == ["c", "f", "t"]
    assert types({"step": "case", "columns": ["c"], "to": "lower"}) == ["f", "t"]
    assert types({"step": "trim", "columns": ["f"]}) == ["c", "t"]
    assert types({"step": "rename", "mapping": {"s": "s2"}}) == []
    assert types({"step": "normalize_unicode"}) == []
    assert types({"step": "null_tokens", "columns": ["s"]}) == []
    assert parse_types(None, default_string_steps([])) == ({}, [])
