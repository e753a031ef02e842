"""The bad-input corpus through the CLI: a clear error or quarantine rows, never a traceback,
never a half-written table."""

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.store.warehouse import open_warehouse

BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<rows><row><v>&lol3;</v></row></rows>
"""


def write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return make


def truncated_gzip(folder: Path) -> Path:
    path = folder / "cut.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 5000)[:-40])
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # case: (file, expected outcome: "error" exit 1, or "loaded" exit 0)
    "unterminated quote": (write("cut.csv", b'a,b\n1,2\n3,"unfinished\n'), "error"),
    "truncated gzip": (truncated_gzip, "error"),
    "latin-1 text": (write("latin.csv", "name,city\nJosé,Málaga\n".encode("latin-1")), "loaded"),
    "binary garbage csv": (write("junk.csv", os.urandom(4096)), "error"),
    "binary garbage json": (write("junk.json", b"\x89PNG" + os.urandom(2048)), "error"),
    "binary garbage parquet": (write("junk.parquet", os.urandom(4096)), "error"),
    "xml entity bomb": (write("bomb.xml", BOMB.encode()), "error"),
    "10 MB single field": (write("big.csv", b"id,blob\n1," + b"x" * 10_000_000 + b"\n"), "loaded"),
    "header only": (write("header.csv", b"a,b,c\n"), "loaded"),
    "empty file": (write("empty.csv", b""), "loaded"),
    "mixed types per key": (
        write("mixed.ndjson", b'{"k": 1}\n{"k": "x"}\n{"k": [1, 2]}\n{"k": 2.5}\n'),
        "loaded",
    ),
    "ragged csv row": (write("ragged.csv", b"a,b\n" + b"1,2\n" * 40 + b"3,4,5\n"), "loaded"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_clear_error_or_quarantine_never_a_traceback(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopline.cli.app import app

    make, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    path = make(tmp_path)
    args = ["ingest", str(path), "--into", "t", "--json", "--record-path", "rows/row"]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    warehouse = open_warehouse("duckdb:///.loopline/warehouse.duckdb", base_dir=tmp_path)
    try:
        if expected == "error":
            assert result.exit_code == 1, result.output
            (run,) = json.loads(result.output)
            assert run["status"] == "failed"
            assert path.name in run["error"]  # the message names the file
            assert warehouse.table_schema("t") is None  # nothing half-written
        else:
            assert result.exit_code == 0, result.output
            (run,) = json.loads(result.output)
            stored = warehouse.read_table("t").num_rows if warehouse.table_schema("t") else 0
            assert stored == run["rows_written"]
            assert run["rows_read"] == (
                run["rows_written"] + run["rows_quarantined"] + run["rows_deduplicated"]
            )
    finally:
        warehouse.close()
