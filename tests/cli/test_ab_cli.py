"""``loopline ab`` (report, stop, start, list) on a project folder with a SQLite serving log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from loopline.cli.ab import ab
from loopline.cli.console import console
from loopline.serve.log_tables import ab_exposures, ensure_tables, serve_events
from loopline.store.metadata import MetadataStore

runner = CliRunner()
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def write_project(folder: Path, **request_log: Any) -> Path:
    serve = {
        "models": [{"name": "churn"}],
        "recommender": {"model": "recs"},
        "request_log": request_log,
        "experiments": {
            "recs_ab": {
                "outcome": "purchase",
                "variants": [
                    {"name": "popular", "strategy": "popular"},
                    {"name": "blend", "strategy": "blend"},
                ],
            },
            "churn_old": {
                "model": "churn",
                "enabled": False,
                "variants": [{"name": "control", "alias": "champion"}],
            },
        },
    }
    path = folder / "loopline.yaml"
    path.write_text(yaml.safe_dump({"project": "shop", "serve": serve}))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose log holds 20 units per variant: 2 vs 5 purchases after exposure."""
    path = write_project(tmp_path)
    store = MetadataStore("sqlite:///.loopline/metadata.db", base_dir=tmp_path)
    ensure_tables(store)
    with store.engine.begin() as conn:
        conn.execute(
            ab_exposures.insert(),
            [
                {
                    "time": T0,
                    "experiment": "recs_ab",
                    "variant": ("popular", "blend")[i % 2],
                    "unit_id": f"u{i}",
                }
                for i in range(40)
            ],
        )
        conn.execute(
            serve_events.insert(),
            [
                {"time": T0, "user": f"u{i}", "item": "x", "event_type": "purchase"}
                for i in (0, 2, 1, 3, 5, 7, 9)
            ],
        )
    store.close()
    return path


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables and guidance lines unwrapped (the test runner's console is 80 wide)."""
    monkeypatch.setattr(console, "_width", 200)


def invoke(*args: str) -> Result:
    return runner.invoke(ab, list(args))


def test_report_json(project: Path) -> None:
    result = invoke("report", "recs_ab", "--config", str(project), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["experiment"], report["target"], report["state"]) == (
        "recs_ab",
        "recommender",
        "running",
    )
    popular, blend = report["variants"]
    assert (popular["units"], popular["conversions"], popular["rate"]) == (20, 2, 0.1)
    assert (blend["units"], blend["conversions"], blend["rate"]) == (20, 5, 0.25)
    assert blend["p_value"] == pytest.approx(0.21189, abs=1e-5)
    assert blend["prob_beat_control"] == pytest.approx(0.8811, abs=1e-3)
    assert blend["lift"] == pytest.approx(1.5)
    assert report["warnings"] == []


def test_report_table_and_guidance(project: Path) -> None:
    result = invoke("report", "recs_ab", "-c", str(project), "--lift", "0.5")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "recs_ab on recommender: purchase (running)" in out
    assert "popular (control)" in out
    for cell in ("10.00%", "25.00%", "+150.00%", "0.2119", "0.881"):
        assert cell in out, cell
    assert (
        "blend: p = 0.212 vs popular: needs ~666 more units per variant to detect a 50.0% lift"
        in out
    )


def test_stop_start_and_list(project: Path) -> None:
    stopped = invoke("stop", "recs_ab", "-c", str(project), "--actor", "alice")
    assert stopped.exit_code == 0, stopped.output
    assert "stopped experiment recs_ab" in stopped.output
    listed = json.loads(invoke("list", "-c", str(project), "--json").output)
    assert {e["experiment"]: e["state"] for e in listed} == {
        "churn_old": "disabled",
        "recs_ab": "stopped",
    }
    assert listed[1]["variants"] == {"popular": 1.0, "blend": 1.0}
    report = json.loads(invoke("report", "recs_ab", "-c", str(project), "--json").output)
    assert report["state"] == "stopped"
    assert invoke("start", "recs_ab", "-c", str(project)).exit_code == 0
    table = invoke("list", "-c", str(project))
    assert table.exit_code == 0
    assert "running" in table.output
    assert "popular (1), blend (1)" in table.output


def test_errors_are_one_line(project: Path) -> None:
    unknown = invoke("report", "nope", "-c", str(project))
    assert unknown.exit_code == 1
    assert "error: no experiment named 'nope'" in unknown.output
    assert "churn_old, recs_ab" in unknown.output
    disabled = invoke("start", "churn_old", "-c", str(project))
    assert disabled.exit_code == 1
    assert "error: experiment 'churn_old' is disabled in loopline.yaml" in disabled.output
    assert invoke("stop", "nope", "-c", str(project)).exit_code == 1


def test_a_sampled_log_is_flagged(tmp_path: Path) -> None:
    path = write_project(tmp_path, sample_rate=0.5)
    result = invoke("report", "recs_ab", "-c", str(path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [v["units"] for v in report["variants"]] == [0, 0]
    assert "sample_rate is 0.5" in report["warnings"][0]
