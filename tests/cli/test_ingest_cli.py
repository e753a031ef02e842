import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli.app import app

runner = CliRunner()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_init_then_ingest_all_then_runs(in_tmp: Path) -> None:
    result = runner.invoke(app, ["init", "shop"])
    assert result.exit_code == 0, result.output
    assert (in_tmp / "shop" / "loopline.yaml").is_file()
    cfg = str(in_tmp / "shop" / "loopline.yaml")
    result = runner.invoke(app, ["ingest", "--all", "--config", cfg, "--json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.output)
    assert run["status"] == "succeeded"
    assert run["rows_read"] == 5
    assert run["rows_quarantined"] >= 2  # the bad e-mail, the '??' spend, the 'gold' plan
    listed = runner.invoke(app, ["runs", "--config", cfg, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["run_id"] for r in json.loads(listed.output)] == [run["run_id"]]


def test_quick_path_loads_one_file_and_prints_a_summary(in_tmp: Path) -> None:
    rows = "".join(f"p{i},{20 + i}\n" for i in range(40))
    (in_tmp / "people.csv").write_text(f"name,age\n{rows}bob,x\n")
    result = runner.invoke(app, ["ingest", "people.csv", "--into", "people"])
    assert result.exit_code == 0, result.output
    assert "ingest summary" in result.output
    assert "type:age" in result.output


def test_unknown_job_is_a_clear_error_not_a_traceback(in_tmp: Path) -> None:
    runner.invoke(app, ["init", "."])
    result = runner.invoke(app, ["ingest", "nope"])
    assert result.exit_code == 1
    assert "no ingest job named 'nope'" in result.output
    assert "Traceback" not in result.output


def test_missing_file_fails_with_exit_code_1(in_tmp: Path) -> None:
    result = runner.invoke(app, ["ingest", "missing/*.csv", "--into", "t", "--json"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_error_lines_keep_their_structured_fields(in_tmp: Path) -> None:
    result = runner.invoke(app, ["ingest", "missing/*.csv", "--into", "t"])
    assert result.exit_code == 1
    assert "[path=" in result.output  # not swallowed as rich markup
